//! The WebAssembly interpreter's standard library as a read-only directory of `.pyc`
//! files, made once from the zip inside the module (`/usr/local/lib/python312.zip`).
//!
//! Why: with the library only in the zip, every instance parses the zip's directory in
//! pure Python before its first import (15 ms of a ~60 ms start in WebAssembly, measured
//! on the 2-core AMD EPYC box); found first on `PYTHONPATH` as plain files, the same
//! compiled modules load without it. The directory is the interpreter's own bytecode,
//! mounted read-only: it adds nothing a guest could not already read.

use std::path::{Component, Path, PathBuf};

use crate::guest::{run_to_end, Launcher};
use crate::harness::{code_frame, source_frame_of};

/// The program an instance runs to hand its library zip over: `<name length> <data
/// length>\n<name><data>` per member, on stdout.
const DUMP: &str = "import os, zipfile\n\
z = zipfile.ZipFile('/usr/local/lib/python312.zip')\n\
for name in z.namelist():\n    data = z.read(name)\n    out = b'%d %d\\n' % (len(name.encode()), len(data)) + name.encode() + data\n    while out:\n        out = out[os.write(1, out):]\n";

/// The extracted library under `dir` (made when missing); `None` when it cannot be made
/// (the backend then runs on the zip alone).
pub fn extracted(launcher: &dyn Launcher, dir: &Path) -> Option<PathBuf> {
    if dir.join("encodings/__init__.pyc").is_file() {
        return Some(dir.to_path_buf());
    }
    let members = dump(launcher).ok()?;
    let tmp = dir.with_extension(format!("tmp-{}", crate::harness::new_token()));
    let _ = std::fs::remove_dir_all(&tmp);
    for (name, data) in &members {
        let relative = Path::new(name);
        let safe = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !safe || name.ends_with('/') {
            continue;
        }
        let path = tmp.join(relative);
        std::fs::create_dir_all(path.parent()?).ok()?;
        std::fs::write(&path, data).ok()?;
    }
    std::fs::rename(&tmp, dir).ok().or_else(|| {
        let _ = std::fs::remove_dir_all(&tmp);
        dir.join("encodings/__init__.pyc").is_file().then_some(())
    })?;
    Some(dir.to_path_buf())
}

/// Runs [`DUMP`] in an instance and parses its output.
fn dump(launcher: &dyn Launcher) -> Result<Vec<(String, Vec<u8>)>, String> {
    let code = run_to_end(launcher, source_frame_of(DUMP))?;
    let out = run_to_end(launcher, code_frame(&code))?;
    let mut members = Vec::new();
    let mut rest = &out[..];
    while !rest.is_empty() {
        let line = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated header")?;
        let header = std::str::from_utf8(&rest[..line]).map_err(|e| e.to_string())?;
        let (n, d) = header.split_once(' ').ok_or("bad header")?;
        let (n, d): (usize, usize) = (
            n.parse().map_err(|_| "bad size")?,
            d.parse().map_err(|_| "bad size")?,
        );
        let body = rest
            .get(line + 1..line + 1 + n + d)
            .ok_or("truncated member")?;
        let name = String::from_utf8(body[..n].to_vec()).map_err(|e| e.to_string())?;
        members.push((name, body[n..].to_vec()));
        rest = &rest[line + 1 + n + d..];
    }
    if members.is_empty() {
        return Err("no members".into());
    }
    Ok(members)
}
