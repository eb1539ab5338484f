//! /etc/resolv.conf: its text for a list of name servers, and an atomic replacement (a
//! temporary file in the same directory, then rename), so a resolver never reads half a file.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

/// The file's text; `origin` says where the servers came from (`dhcp on eth0`).
pub fn content(dns: &[Ipv4Addr], origin: &str) -> String {
    let mut s = format!("# written by ghost-init from {origin}\n");
    for d in dns.iter().take(super::dhcp::MAX_DNS) {
        s.push_str(&format!("nameserver {d}\n"));
    }
    s
}

/// Replaces `path` with `text` in one rename.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(".resolv.conf.ghost-init");
    let r = std::fs::create_dir_all(dir)
        .and_then(|_| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|_| std::fs::rename(&tmp, path));
    r.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_at_most_three_servers_and_replaces_the_file() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("etc/resolv.conf");
        let dns: Vec<Ipv4Addr> = (1..=4).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        write_atomically(&path, &content(&dns, "dhcp on eth0")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "# written by ghost-init from dhcp on eth0\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n");
        write_atomically(&path, &content(&dns[3..], "ghost.ip")).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("nameserver 10.0.0.4\n"));
        let left: Vec<_> = std::fs::read_dir(t.path().join("etc")).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, ["resolv.conf"], "no temporary file is left behind");
    }

    #[test]
    fn an_unwritable_place_is_an_error_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("etc"), "a file, not a directory").unwrap();
        let e = write_atomically(&t.path().join("etc/resolv.conf"), "x").unwrap_err();
        assert!(e.contains("etc/resolv.conf"), "{e}");
    }
}
