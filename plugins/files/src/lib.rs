//! `files`: list, read, search and edit files under the directories the
//! operator grants (`grants.dirs`); nothing else exists for it.
//!
//! Paths are absolute guest paths under a granted directory (`/notes/a.md`) or
//! relative to the first one. Every refusal says what to do: a path outside the
//! granted directories, a binary file, a file over the size cap, an edit whose
//! text does not occur exactly once. No move or rename: read, write and delete
//! do the same with fewer ways to lose data.
//!
//! Size caps come from the grant's environment: `FILES_MAX_READ_KIB` (default
//! 256) and `FILES_MAX_WRITE_KIB` (default 1024).

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use stockade_sdk::prelude::*;

/// The directories this plugin was granted, as the plugin sees them.
fn roots() -> Vec<String> {
    stockade_sdk::wasi::filesystem::preopens::get_directories()
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

fn cap_kib(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resolves a path the model gave to a path under a granted directory.
fn resolve(path: &str) -> Result<PathBuf, ToolError> {
    let roots = roots();
    let Some(first) = roots.first() else {
        return Err(ToolError::failed(
            "no directory is granted to this plugin: the operator adds one with \
             `dirs = [{ host = \"/srv/notes\", guest = \"/notes\", mode = \"rw\" }]` under \
             `[plugins.files.grants]`",
        ));
    };
    let given = Path::new(path.trim());
    let joined = if given.is_absolute() {
        given.to_path_buf()
    } else {
        Path::new(first).join(given)
    };
    // Lexical normalisation: `..` may not climb out of a granted directory.
    let mut clean = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::Normal(p) => clean.push(p),
            _ => {}
        }
    }
    if roots.iter().any(|r| clean.starts_with(r)) {
        Ok(clean)
    } else {
        Err(ToolError::failed(format!(
            "`{path}` is outside the granted directories ({}); use a path under one of them",
            roots.join(", ")
        )))
    }
}

/// An I/O error as a sentence about `path`.
fn io_error(path: &Path, what: &str, e: std::io::Error) -> ToolError {
    use std::io::ErrorKind::*;
    let why = match e.kind() {
        NotFound => "it does not exist".to_owned(),
        PermissionDenied | ReadOnlyFilesystem => {
            "permission denied (is the directory granted read-only? `mode = \"rw\"` allows writing)"
                .to_owned()
        }
        AlreadyExists => "it already exists".to_owned(),
        IsADirectory => "it is a directory".to_owned(),
        NotADirectory => "a part of the path is not a directory".to_owned(),
        _ => e.to_string(),
    };
    ToolError::failed(format!("cannot {what} `{}`: {why}", path.display()))
}

// ---- list_files --------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
struct ListArgs {
    /// The directory to list (default: the first granted directory).
    #[serde(default)]
    path: Option<String>,
    /// Only files whose path relative to `path` matches this glob (`**/*.md`).
    #[serde(default)]
    glob: Option<String>,
    /// How deep to descend (1 = only `path` itself; default 3, at most 10).
    #[serde(default)]
    max_depth: Option<u32>,
}

fn list_files(args: ListArgs, _: &Call) -> Result<String, ToolError> {
    let base = resolve(args.path.as_deref().unwrap_or("."))?;
    let matcher = glob_matcher(args.glob.as_deref())?;
    let depth = args.max_depth.unwrap_or(3).clamp(1, 10);
    let mut out = Vec::new();
    let mut truncated = false;
    walk(&base, &base, depth, &mut |rel, meta| {
        if matcher.as_ref().is_some_and(|m| !m.is_match(rel)) {
            return;
        }
        if out.len() >= 500 {
            truncated = true;
            return;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if meta.is_dir() {
            out.push(format!("{}/", rel.display()));
        } else {
            out.push(format!(
                "{}  {} bytes  mtime {modified}",
                rel.display(),
                meta.len()
            ));
        }
    })
    .map_err(|e| io_error(&base, "list", e))?;
    let mut text = format!(
        "{}: {} entries\n{}",
        base.display(),
        out.len(),
        out.join("\n")
    );
    if truncated {
        text.push_str("\n(stopped at 500 entries: narrow `path` or `glob`)");
    }
    Ok(text)
}

/// The matcher of an optional glob argument.
fn glob_matcher(glob: Option<&str>) -> Result<Option<globset::GlobMatcher>, ToolError> {
    glob.map(|g| {
        globset::Glob::new(g)
            .map(|g| g.compile_matcher())
            .map_err(|e| ToolError::invalid_arguments(format!("`glob`: {e}")))
    })
    .transpose()
}

fn walk(
    base: &Path,
    dir: &Path,
    depth: u32,
    f: &mut dyn FnMut(&Path, &std::fs::Metadata),
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let rel = path.strip_prefix(base).unwrap_or(&path).to_path_buf();
        f(&rel, &meta);
        if meta.is_dir() && depth > 1 {
            let _ = walk(base, &path, depth - 1, f);
        }
    }
    Ok(())
}

// ---- read_file ---------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
struct ReadArgs {
    /// The file.
    path: String,
    /// First line to show (1-based; default 1).
    #[serde(default)]
    start_line: Option<usize>,
    /// Last line to show (inclusive; default: the end).
    #[serde(default)]
    end_line: Option<usize>,
}

/// A file's text: refused when too large or not text.
fn read_text(path: &Path) -> Result<String, ToolError> {
    let limit = cap_kib("FILES_MAX_READ_KIB", 256) << 10;
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, "read", e))?;
    if meta.is_dir() {
        return Err(ToolError::failed(format!(
            "`{}` is a directory: use list_files",
            path.display()
        )));
    }
    if meta.len() > limit {
        return Err(ToolError::failed(format!(
            "`{}` is {} bytes, over the read limit of {} KiB (FILES_MAX_READ_KIB); \
             read a line range, or search_files for what you need",
            path.display(),
            meta.len(),
            limit >> 10
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| io_error(path, "read", e))?;
    if bytes.iter().take(8192).any(|b| *b == 0) {
        return Err(ToolError::failed(format!(
            "`{}` is a binary file ({} bytes); this tool reads text only",
            path.display(),
            bytes.len()
        )));
    }
    String::from_utf8(bytes).map_err(|_| {
        ToolError::failed(format!(
            "`{}` is not UTF-8 text; this tool reads text only",
            path.display()
        ))
    })
}

fn read_file(args: ReadArgs, _: &Call) -> Result<String, ToolError> {
    let path = resolve(&args.path)?;
    let text = read_text(&path)?;
    let lines: Vec<&str> = text.lines().collect();
    let start = args.start_line.unwrap_or(1).max(1);
    let end = args.end_line.unwrap_or(lines.len()).min(lines.len());
    if start > lines.len().max(1) {
        return Err(ToolError::invalid_arguments(format!(
            "`start_line` {start} is past the end: `{}` has {} lines",
            path.display(),
            lines.len()
        )));
    }
    let width = end.max(1).to_string().len();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate().take(end).skip(start - 1) {
        out.push_str(&format!("{:>width$}\t{line}\n", i + 1));
    }
    Ok(out)
}

// ---- write_file, append_file, delete_file -------------------------------------

#[derive(Deserialize, JsonSchema)]
struct WriteArgs {
    /// The file (parent directories are created).
    path: String,
    /// The whole new content.
    content: String,
}

fn check_write_size(n: usize) -> Result<(), ToolError> {
    let limit = cap_kib("FILES_MAX_WRITE_KIB", 1024) << 10;
    if n as u64 > limit {
        return Err(ToolError::failed(format!(
            "{n} bytes is over the write limit of {} KiB (FILES_MAX_WRITE_KIB)",
            limit >> 10
        )));
    }
    Ok(())
}

/// Replaces `path` atomically: a temporary file beside it, then a rename.
fn write_atomic(path: &Path, content: &[u8]) -> Result<(), ToolError> {
    check_write_size(content.len())?;
    if path.is_dir() {
        return Err(ToolError::failed(format!(
            "`{}` is a directory",
            path.display()
        )));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, "create", e))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.stockade-tmp"));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(content).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path, "write", e));
    }
    Ok(())
}

fn write_file(args: WriteArgs, _: &Call) -> Result<String, ToolError> {
    let path = resolve(&args.path)?;
    write_atomic(&path, args.content.as_bytes())?;
    Ok(format!(
        "wrote {} bytes to {}",
        args.content.len(),
        path.display()
    ))
}

fn append_file(args: WriteArgs, _: &Call) -> Result<String, ToolError> {
    let path = resolve(&args.path)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    check_write_size(size as usize + args.content.len())?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, "create", e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(args.content.as_bytes()))
        .map_err(|e| io_error(&path, "append to", e))?;
    Ok(format!(
        "appended {} bytes to {}",
        args.content.len(),
        path.display()
    ))
}

#[derive(Deserialize, JsonSchema)]
struct PathArgs {
    /// The file.
    path: String,
}

fn delete_file(args: PathArgs, _: &Call) -> Result<String, ToolError> {
    let path = resolve(&args.path)?;
    let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error(&path, "delete", e))?;
    if meta.is_dir() {
        return Err(ToolError::failed(format!(
            "`{}` is a directory; this tool deletes files only",
            path.display()
        )));
    }
    std::fs::remove_file(&path).map_err(|e| io_error(&path, "delete", e))?;
    Ok(format!("deleted {}", path.display()))
}

// ---- edit_file ---------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
struct EditArgs {
    /// The file.
    path: String,
    /// The exact text to replace (whitespace and line breaks included).
    old_text: String,
    /// The text to put in its place.
    new_text: String,
    /// Replace every occurrence instead of requiring exactly one.
    #[serde(default)]
    replace_all: bool,
}

fn edit_file(args: EditArgs, _: &Call) -> Result<String, ToolError> {
    let path = resolve(&args.path)?;
    if args.old_text.is_empty() {
        return Err(ToolError::invalid_arguments(
            "`old_text` is empty; give the exact text to replace, or use write_file",
        ));
    }
    let text = read_text(&path)?;
    let count = text.matches(&args.old_text).count();
    let updated = match (count, args.replace_all) {
        (0, _) => {
            return Err(ToolError::failed(format!(
                "`old_text` does not occur in `{}`; read_file to see its exact text \
                 (whitespace and line breaks must match)",
                path.display()
            )));
        }
        (1, _) | (_, true) => text.replace(&args.old_text, &args.new_text),
        (n, false) => {
            return Err(ToolError::failed(format!(
                "`old_text` occurs {n} times in `{}`; add surrounding lines to make it \
                 unique, or set `replace_all`",
                path.display()
            )));
        }
    };
    write_atomic(&path, updated.as_bytes())?;
    Ok(format!(
        "replaced {count} occurrence{} in {}",
        if count == 1 { "" } else { "s" },
        path.display()
    ))
}

// ---- search_files ------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
struct SearchArgs {
    /// The text (or, with `regex`, the regular expression) to look for.
    pattern: String,
    /// Treat `pattern` as a regular expression.
    #[serde(default)]
    regex: bool,
    /// Where to search (default: the first granted directory).
    #[serde(default)]
    path: Option<String>,
    /// Only files whose relative path matches this glob (`**/*.rs`).
    #[serde(default)]
    glob: Option<String>,
    /// Most matches to return (default 100, at most 1000).
    #[serde(default)]
    max_results: Option<usize>,
}

fn search_files(args: SearchArgs, _: &Call) -> Result<String, ToolError> {
    let base = resolve(args.path.as_deref().unwrap_or("."))?;
    let pattern = if args.regex {
        args.pattern.clone()
    } else {
        regex::escape(&args.pattern)
    };
    let re = regex::Regex::new(&pattern).map_err(|e| {
        ToolError::invalid_arguments(format!("`pattern` is not a valid regex: {e}"))
    })?;
    let matcher = glob_matcher(args.glob.as_deref())?;
    let max = args.max_results.unwrap_or(100).clamp(1, 1000);
    let mut hits = Vec::new();
    let mut more = false;
    walk(&base, &base, 10, &mut |rel, meta| {
        if !meta.is_file() || matcher.as_ref().is_some_and(|m| !m.is_match(rel)) || more {
            return;
        }
        let Ok(text) = read_text(&base.join(rel)) else {
            return; // binary, too large or unreadable: skipped
        };
        for (i, line) in text.lines().enumerate() {
            if re.is_match(line) {
                if hits.len() == max {
                    more = true;
                    return;
                }
                let shown: String = line.chars().take(200).collect();
                hits.push(format!("{}:{}: {shown}", base.join(rel).display(), i + 1));
            }
        }
    })
    .map_err(|e| io_error(&base, "search", e))?;
    if hits.is_empty() {
        return Ok(format!(
            "no match for `{}` under {}",
            args.pattern,
            base.display()
        ));
    }
    let mut out = hits.join("\n");
    if more {
        out.push_str(&format!(
            "\n(stopped at {max} matches: narrow `path`, `glob` or `pattern`)"
        ));
    }
    Ok(out)
}

stockade_sdk::plugin! {
    description: "Lists, reads, searches and edits files under the directories the operator grants",
    capabilities: { dirs: ["/files"], env: ["FILES_MAX_READ_KIB", "FILES_MAX_WRITE_KIB"] },
    tools: [
        Tool::new("list_files", "List files and directories (sizes, modification times) under a granted directory, optionally filtered by a glob", list_files).read_only(),
        Tool::new("read_file", "Read a text file with line numbers, optionally a range of lines", read_file).read_only(),
        Tool::new("search_files", "Search text files for a literal string or a regex; answers path:line: text", search_files).read_only(),
        Tool::new("write_file", "Create or replace a whole file atomically (parent directories are created)", write_file).destructive(),
        Tool::new("edit_file", "Replace an exact piece of text in a file; it must occur exactly once unless replace_all is set", edit_file).destructive(),
        Tool::new("append_file", "Append text to the end of a file (created if missing)", append_file),
        Tool::new("delete_file", "Delete a file (never a directory)", delete_file).destructive(),
    ],
}
