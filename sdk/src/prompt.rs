use std::collections::HashMap;

use crate::ToolError;
use crate::bindings::exports::stockade::plugin::prompts as wit;
use crate::types::{Content, Role};

pub use wit::PromptMessage;

type Renderer = Box<dyn Fn(&HashMap<String, String>) -> Result<Vec<PromptMessage>, ToolError>>;

/// A prompt template the plugin serves (MCP `Prompt`).
///
/// ```
/// # use stockade_sdk::prelude::*;
/// let review = Prompt::new("review", "Review a piece of code")
///     .argument("code", "The code to review", true)
///     .render(|args| {
///         Ok(vec![PromptMessage::user(format!("Please review:\n{}", args["code"]))])
///     });
/// # let _ = review;
/// ```
///
/// Required arguments are checked before `render` runs, so the closure may index
/// them directly; optional ones are absent from the map when not given.
pub struct Prompt {
    meta: wit::Prompt,
    render: Renderer,
}

impl Prompt {
    /// A prompt named `name` (unique across the host). Without [`render`](Self::render)
    /// it renders to no messages.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            meta: wit::Prompt {
                name: name.into(),
                title: None,
                description: Some(description.into()),
                arguments: Vec::new(),
            },
            render: Box::new(|_| Ok(Vec::new())),
        }
    }

    /// A human-readable title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.meta.title = Some(title.into());
        self
    }

    /// Declares an argument.
    pub fn argument(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        required: bool,
    ) -> Self {
        self.meta.arguments.push(wit::PromptArgument {
            name: name.into(),
            title: None,
            description: Some(description.into()),
            required,
        });
        self
    }

    /// How to render the prompt from its arguments.
    pub fn render<F>(mut self, render: F) -> Self
    where
        F: Fn(&HashMap<String, String>) -> Result<Vec<PromptMessage>, ToolError> + 'static,
    {
        self.render = Box::new(render);
        self
    }
}

impl PromptMessage {
    /// A message from the user.
    pub fn user(content: impl Into<Content>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// A message from the assistant.
    pub fn assistant(content: impl Into<Content>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// `prompts.list-prompts`.
pub fn list_prompts(prompts: &[Prompt]) -> Vec<wit::Prompt> {
    prompts.iter().map(|p| p.meta.clone()).collect()
}

/// `prompts.get-prompt`.
pub fn get_prompt(
    prompts: &[Prompt],
    name: &str,
    arguments: Vec<(String, String)>,
) -> Result<wit::PromptResult, wit::PromptError> {
    let Some(prompt) = prompts.iter().find(|p| p.meta.name == name) else {
        return Err(wit::PromptError::UnknownPrompt(format!(
            "no prompt named `{name}` in this plugin"
        )));
    };
    let args: HashMap<String, String> = arguments.into_iter().collect();
    for a in &prompt.meta.arguments {
        if a.required && !args.contains_key(&a.name) {
            return Err(wit::PromptError::InvalidArguments(format!(
                "prompt `{name}` needs the argument `{}`",
                a.name
            )));
        }
    }
    match (prompt.render)(&args) {
        Ok(messages) => Ok(wit::PromptResult {
            description: prompt.meta.description.clone(),
            messages,
        }),
        Err(ToolError::InvalidArguments(m)) => Err(wit::PromptError::InvalidArguments(m)),
        Err(e) => Err(wit::PromptError::Failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_check() {
        let prompts = vec![
            Prompt::new("p", "A prompt")
                .argument("who", "Who", true)
                .argument("how", "How", false)
                .render(|a| Ok(vec![PromptMessage::user(format!("hi {}", a["who"]))])),
        ];
        assert_eq!(list_prompts(&prompts)[0].arguments.len(), 2);
        let r = get_prompt(&prompts, "p", vec![("who".into(), "bob".into())]).unwrap();
        assert!(
            matches!(&r.messages[..], [m] if matches!(&m.content, Content::Text(t) if t == "hi bob"))
        );
        assert!(matches!(
            get_prompt(&prompts, "p", vec![]),
            Err(wit::PromptError::InvalidArguments(m)) if m.contains("`who`")
        ));
        assert!(matches!(
            get_prompt(&prompts, "q", vec![]),
            Err(wit::PromptError::UnknownPrompt(_))
        ));
    }
}
