use crate::ToolError;
use crate::bindings::exports::stockade::plugin::resources as wit;
use crate::types::{BlobResource, ResourceContents, TextResource};

type Reader = Box<dyn Fn(&str) -> Result<ResourceContents, ToolError>>;
type TemplateReader = Box<dyn Fn(&str, &[String]) -> Result<String, ToolError>>;

/// A concrete resource the plugin serves (MCP `Resource`), read on demand.
///
/// ```
/// # use stockade_sdk::prelude::*;
/// let motd = Resource::text("motd://today", "motd", || Ok("Be kind.".to_owned()))
///     .description("The message of the day")
///     .mime_type("text/plain");
/// # let _ = motd;
/// ```
pub struct Resource {
    meta: wit::Resource,
    read: Reader,
}

impl Resource {
    /// A text resource at `uri`; `read` produces its text.
    pub fn text<F>(uri: impl Into<String>, name: impl Into<String>, read: F) -> Self
    where
        F: Fn() -> Result<String, ToolError> + 'static,
    {
        let mut r = Self::new(uri, name, move |uri| {
            Ok(ResourceContents::Text(TextResource {
                uri: uri.to_owned(),
                mime_type: None,
                text: read()?,
            }))
        });
        r.meta.mime_type = Some("text/plain".to_owned());
        r
    }

    /// A binary resource at `uri` of MIME type `mime_type`; `read` produces its bytes.
    pub fn blob<F>(
        uri: impl Into<String>,
        name: impl Into<String>,
        mime_type: impl Into<String>,
        read: F,
    ) -> Self
    where
        F: Fn() -> Result<Vec<u8>, ToolError> + 'static,
    {
        let mut r = Self::new(uri, name, move |uri| {
            Ok(ResourceContents::Blob(BlobResource {
                uri: uri.to_owned(),
                mime_type: None,
                blob: read()?,
            }))
        });
        r.meta.mime_type = Some(mime_type.into());
        r
    }

    fn new<F>(uri: impl Into<String>, name: impl Into<String>, read: F) -> Self
    where
        F: Fn(&str) -> Result<ResourceContents, ToolError> + 'static,
    {
        Self {
            meta: wit::Resource {
                uri: uri.into(),
                name: name.into(),
                title: None,
                description: None,
                mime_type: None,
                size: None,
            },
            read: Box::new(read),
        }
    }

    /// A human-readable title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.meta.title = Some(title.into());
        self
    }

    /// What the resource is.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.meta.description = Some(description.into());
        self
    }

    /// The MIME type (text resources default to `text/plain`).
    pub fn mime_type(mut self, mime_type: impl Into<String>) -> Self {
        self.meta.mime_type = Some(mime_type.into());
        self
    }

    /// The size in bytes, when known in advance.
    pub fn size(mut self, size: u64) -> Self {
        self.meta.size = Some(size);
        self
    }
}

/// A family of text resources addressed by an RFC 6570 URI template (MCP
/// `ResourceTemplate`), such as `notes://{name}`.
///
/// The SDK matches URIs against the template with [`crate::uri_template`] (each
/// `{var}` matches one or more characters other than `/`, `?` and `#`; `{+var}`
/// matches any) — the same matcher the host routes with — and hands the handler
/// the URI and the variables, in template order.
///
/// ```
/// # use stockade_sdk::prelude::*;
/// let notes = ResourceTemplate::text("notes://{name}", "notes", |_uri, vars| {
///     Ok(format!("The note called {}", vars[0]))
/// });
/// # let _ = notes;
/// ```
pub struct ResourceTemplate {
    meta: wit::ResourceTemplate,
    read: TemplateReader,
}

impl ResourceTemplate {
    /// A template of text resources; `read(uri, variables)` produces the text.
    pub fn text<F>(uri_template: impl Into<String>, name: impl Into<String>, read: F) -> Self
    where
        F: Fn(&str, &[String]) -> Result<String, ToolError> + 'static,
    {
        Self {
            meta: wit::ResourceTemplate {
                uri_template: uri_template.into(),
                name: name.into(),
                title: None,
                description: None,
                mime_type: Some("text/plain".to_owned()),
            },
            read: Box::new(read),
        }
    }

    /// A human-readable title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.meta.title = Some(title.into());
        self
    }

    /// What the resources are.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.meta.description = Some(description.into());
        self
    }

    /// The MIME type of every match (defaults to `text/plain`).
    pub fn mime_type(mut self, mime_type: impl Into<String>) -> Self {
        self.meta.mime_type = Some(mime_type.into());
        self
    }
}

/// A resource or a resource template, as listed in [`plugin!`](crate::plugin).
#[doc(hidden)]
pub enum ResourceEntry {
    Resource(Resource),
    Template(ResourceTemplate),
}

impl From<Resource> for ResourceEntry {
    fn from(r: Resource) -> Self {
        Self::Resource(r)
    }
}

impl From<ResourceTemplate> for ResourceEntry {
    fn from(t: ResourceTemplate) -> Self {
        Self::Template(t)
    }
}

/// Matches `uri` against `template`; returns the variables' values.
fn match_template(template: &str, uri: &str) -> Option<Vec<String>> {
    crate::uri_template::match_uri(template, uri)
}

/// `resources.list-resources`.
pub fn list_resources(entries: &[ResourceEntry]) -> Vec<wit::Resource> {
    entries
        .iter()
        .filter_map(|e| match e {
            ResourceEntry::Resource(r) => Some(r.meta.clone()),
            ResourceEntry::Template(_) => None,
        })
        .collect()
}

/// `resources.list-resource-templates`.
pub fn list_resource_templates(entries: &[ResourceEntry]) -> Vec<wit::ResourceTemplate> {
    entries
        .iter()
        .filter_map(|e| match e {
            ResourceEntry::Template(t) => Some(t.meta.clone()),
            ResourceEntry::Resource(_) => None,
        })
        .collect()
}

/// `resources.read-resource`.
pub fn read_resource(
    entries: &[ResourceEntry],
    uri: &str,
) -> Result<Vec<ResourceContents>, wit::ResourceError> {
    let failed = |e: ToolError| wit::ResourceError::Failed(e.to_string());
    for entry in entries {
        if let ResourceEntry::Resource(r) = entry
            && r.meta.uri == uri
        {
            let mut contents = (r.read)(uri).map_err(failed)?;
            set_mime(&mut contents, r.meta.mime_type.clone());
            return Ok(vec![contents]);
        }
    }
    for entry in entries {
        if let ResourceEntry::Template(t) = entry
            && let Some(vars) = match_template(&t.meta.uri_template, uri)
        {
            let text = (t.read)(uri, &vars).map_err(failed)?;
            return Ok(vec![ResourceContents::Text(TextResource {
                uri: uri.to_owned(),
                mime_type: t.meta.mime_type.clone(),
                text,
            })]);
        }
    }
    Err(wit::ResourceError::NotFound(format!(
        "no resource `{uri}` in this plugin"
    )))
}

fn set_mime(contents: &mut ResourceContents, mime: Option<String>) {
    match contents {
        ResourceContents::Text(t) => t.mime_type = mime,
        ResourceContents::Blob(b) => b.mime_type = mime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(
            match_template("notes://{name}", "notes://a"),
            Some(vec!["a".into()])
        );
        assert_eq!(match_template("notes://{name}", "notes://"), None);
        assert_eq!(match_template("notes://{name}", "notes://a/b"), None);
        assert_eq!(
            match_template("file:///logs/{name}.log", "file:///logs/app.log"),
            Some(vec!["app".into()])
        );
        assert_eq!(
            match_template("db://{table}/{id}", "db://users/7"),
            Some(vec!["users".into(), "7".into()])
        );
        assert_eq!(match_template("plain://x", "plain://x"), Some(vec![]));
        assert_eq!(match_template("plain://x", "plain://y"), None);
    }

    #[test]
    fn read() {
        let entries = vec![
            ResourceEntry::from(Resource::text("a://1", "one", || Ok("one".into()))),
            ResourceEntry::from(ResourceTemplate::text("b://{x}", "b", |_, v| {
                Ok(format!("b={}", v[0]))
            })),
        ];
        assert_eq!(list_resources(&entries).len(), 1);
        assert_eq!(list_resource_templates(&entries).len(), 1);
        let got = read_resource(&entries, "a://1").unwrap();
        assert!(
            matches!(&got[..], [ResourceContents::Text(t)] if t.text == "one"
            && t.mime_type.as_deref() == Some("text/plain"))
        );
        let got = read_resource(&entries, "b://q").unwrap();
        assert!(matches!(&got[..], [ResourceContents::Text(t)] if t.text == "b=q"));
        assert!(matches!(
            read_resource(&entries, "c://"),
            Err(wit::ResourceError::NotFound(_))
        ));
    }
}
