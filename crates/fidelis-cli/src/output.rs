//! Where the CLI writes its files: under [`OUT_DIR`] (`fidelis-out/`, ignored by git) unless a
//! flag names another path, with missing folders created.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The folder that default output paths live in, relative to the working directory.
pub const OUT_DIR: &str = "fidelis-out";

/// `name` inside [`OUT_DIR`]: the default of an output flag.
pub fn default_path(name: &str) -> PathBuf {
    Path::new(OUT_DIR).join(name)
}

/// Writes `contents` to `path`, creating its parent folders first.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the folder {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_creates_missing_folders() {
        let dir = std::env::temp_dir().join(format!("fidelis-output-{}", std::process::id()));
        let path = dir.join("a/b/graph.json");
        write(&path, "{}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        write(Path::new(&dir).join("top.txt").as_path(), "x").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            default_path("graph.json"),
            Path::new("fidelis-out/graph.json")
        );
    }
}
