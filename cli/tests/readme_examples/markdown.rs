//! The shell examples of README.md and docs/*.md as the README test and the deploy dry
//! run (`deploy-tests/tests/deploy_dry_run.rs`, which includes this file) read them:
//! every ```sh, ```bash or ```console block, the marker of its block (an HTML comment
//! `<!-- example: KIND why -->` on the line before the fence) and each command with its
//! line, without its trailing `# comment`.

// Each of the two tests uses a part of this.
#![allow(dead_code)]

use std::path::Path;

/// One command of a shell block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The Markdown file, relative to the workspace root (`README.md`, `docs/security.md`).
    pub file: String,
    /// 1-based line of the command (its first line, if continued with `\`).
    pub line: usize,
    /// The command as written, without its trailing comment.
    pub command: String,
    /// The KIND of the block's `<!-- example: KIND … -->` marker, if it has one.
    pub marker: Option<String>,
}

impl Example {
    /// `file:line`, for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// The program the command runs: its first word after any `NAME=value` assignments.
    pub fn program(&self) -> &str {
        self.command
            .split_whitespace()
            .find(|w| !is_assignment(w))
            .unwrap_or("")
    }
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The examples of README.md, then of docs/*.md in name order, under `root`.
pub fn workspace_examples(root: &Path) -> Vec<Example> {
    let mut files = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(root.join(f)).expect("a Markdown file is readable");
            examples(f, &text)
        })
        .collect()
}

/// The examples of one Markdown text named `file`.
pub fn examples(file: &str, text: &str) -> Vec<Example> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        let lang = fence.strip_prefix("```").map(str::trim);
        let Some(lang @ ("sh" | "bash" | "console")) = lang else {
            i += 1;
            continue;
        };
        let marker = i
            .checked_sub(1)
            .and_then(|p| marker_of(lines[p]))
            .map(str::to_owned);
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            let first = i;
            let mut command = String::new();
            // A trailing backslash continues the command on the next line.
            loop {
                let line = lines[i];
                i += 1;
                match line.strip_suffix('\\') {
                    Some(part) if i < lines.len() => command.push_str(part),
                    _ => {
                        command.push_str(line);
                        break;
                    }
                }
            }
            let command = if lang == "console" {
                // Only `$ ` lines are commands; the others are their output.
                match command.trim_start().strip_prefix("$ ") {
                    Some(c) => c.to_owned(),
                    None => continue,
                }
            } else {
                command
            };
            let command = strip_comment(&command).trim().to_owned();
            if !command.is_empty() {
                out.push(Example {
                    file: file.to_owned(),
                    line: first + 1,
                    command,
                    marker: marker.clone(),
                });
            }
        }
        i += 1;
    }
    out
}

/// The KIND of a `<!-- example: KIND … -->` line.
fn marker_of(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("<!--")?.trim_start();
    let rest = rest.strip_prefix("example:")?;
    let kind = rest
        .trim_start()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()?;
    (!kind.is_empty()).then_some(kind)
}

/// `line` up to a `#` that starts a shell comment: at the start or after white space,
/// outside quotes.
pub fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return &line[..at],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(markdown: &str, expected: &[(usize, &str, Option<&str>)]) {
        let got: Vec<(usize, String, Option<String>)> = examples("x.md", markdown)
            .into_iter()
            .map(|e| (e.line, e.command, e.marker))
            .collect();
        let expected: Vec<(usize, String, Option<String>)> = expected
            .iter()
            .map(|(l, c, m)| (*l, (*c).to_owned(), m.map(str::to_owned)))
            .collect();
        assert_eq!(got, expected, "{markdown}");
    }

    #[test]
    fn blocks_commands_comments_and_markers() {
        check(
            "text\n```sh\ncurl x   # a comment\n\nkdfs ls\n```\n",
            &[(3, "curl x", None), (5, "kdfs ls", None)],
        );
        check(
            "```rust\nfn main() {}\n```\n```bash\necho '# kept' \"#\" a#b\n```",
            &[(5, "echo '# kept' \"#\" a#b", None)],
        );
        check(
            "<!-- example: illustrative: CI runs it -->\n```sh\ncargo test\n```\n",
            &[(3, "cargo test", Some("illustrative"))],
        );
        check(
            "<!-- example: kubernetes-->\n```sh\n./deploy.sh\n```\n",
            &[(3, "./deploy.sh", Some("kubernetes"))],
        );
        check(
            "```console\n$ kdfs info\nhealthy\n```\n",
            &[(2, "kdfs info", None)],
        );
        check(
            "```sh\ncurl a \\\n  -o b  # c\nkdfs ls\n```\n",
            &[(2, "curl a   -o b", None), (4, "kdfs ls", None)],
        );
    }

    #[test]
    fn the_program_follows_assignments() {
        let e = |c: &str| Example {
            file: String::new(),
            line: 1,
            command: c.to_owned(),
            marker: None,
        };
        assert_eq!(e("KDFS_AUTH_TOKEN=$TOKEN kdfs upload f").program(), "kdfs");
        assert_eq!(e("curl -T f url").program(), "curl");
    }
}
