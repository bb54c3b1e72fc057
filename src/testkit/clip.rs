//! Where the bundled street clip is, for `demo` and `bench`: found at run time beside
//! the executable, never at a path baked in when it was built (an installed or
//! cross-built binary runs on a machine that has no build tree).
//!
//! Promises: the candidates are tried in order: `../share/gridwatch/demo.h264` beside
//! the executable (the .deb: /usr/bin -> /usr/share), `/usr/share/gridwatch/demo.h264`,
//! the source tree the executable was built in when it runs from its `target/` folder,
//! and `tests/fixtures/video/vtest.h264` under the working folder. When none is there
//! the error lists every path tried.

use std::path::{Path, PathBuf};

const INSTALLED: &str = "share/gridwatch/demo.h264";
const IN_SOURCE_TREE: &str = "tests/fixtures/video/vtest.h264";

/// The paths tried for the clip, for an executable at `exe` run in `cwd`.
pub fn candidates(exe: &Path, cwd: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(bin) = exe.parent() {
        out.push(bin.join("..").join(INSTALLED));
        // target/release/gridwatch or target/<triple>/release/gridwatch in a source tree.
        for up in bin.ancestors().skip(1).take(3) {
            if up.file_name().is_some_and(|n| n == "target") {
                out.extend(up.parent().map(|tree| tree.join(IN_SOURCE_TREE)));
            }
        }
    }
    out.push(Path::new("/usr").join(INSTALLED));
    out.push(cwd.join(IN_SOURCE_TREE));
    out
}

/// The bundled clip, or an error naming every path tried.
pub fn bundled() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_default();
    let tried = candidates(&exe, &cwd);
    if let Some(found) = tried.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    let list: Vec<String> = tried.iter().map(|c| c.display().to_string()).collect();
    anyhow::bail!(
        "the bundled demo clip is not in any of: {}; give one with --clip FILE (Annex-B .h264/.h265)",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_binary_looks_beside_itself_and_a_built_one_in_its_tree() {
        let c = candidates(Path::new("/usr/bin/gridwatch"), Path::new("/home/t"));
        assert_eq!(c[0], Path::new("/usr/bin/../share/gridwatch/demo.h264"));
        assert!(c.contains(&PathBuf::from("/home/t/tests/fixtures/video/vtest.h264")));
        let c = candidates(Path::new("/src/gw/target/aarch64-unknown-linux-gnu/release/gridwatch"), Path::new("/"));
        assert!(c.contains(&PathBuf::from("/src/gw/tests/fixtures/video/vtest.h264")), "{c:?}");
        // This test binary runs from the source tree's target folder.
        assert!(bundled().is_ok_and(|p| p.is_file()));
    }
}
