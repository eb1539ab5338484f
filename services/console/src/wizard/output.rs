//! What the wizard writes, and how: the overlay files on the state partition
//! (`/var/lib/ghost/etc/`: `ghost.toml`, `model.toml`, `timezone`), all or nothing.
//!
//! The files are staged in `etc/.wizard-pending/` (each written to a temporary name, fsynced
//! and renamed: ghost-audit's `write_atomic`); the commit point is the rename of that directory
//! to `etc/.wizard-commit/` (then the directory is fsynced); after it the files are moved into
//! place one by one (`ghost_proto::settings::finish_overlay_commit`). A power cut before the
//! commit point leaves the old files (the stage is dropped at the next run or boot); one after
//! it is finished by ghost-init at the next boot, so the result is the old set or the new set.

use std::path::PathBuf;

use ghost_proto::settings::{finish_overlay_commit, OVERLAY_COMMIT, OVERLAY_PENDING};

use super::answers::{Answers, Env, Operator};
use super::catalog::{self, Choice};

/// The files of these answers: (name in the overlay, contents).
pub fn render(a: &Answers, env: &Env) -> Vec<(&'static str, String)> {
    let header = "# Written by the first-boot wizard (ghost wizard); it overrides /etc/ghost/ghost.toml.\n# Run `ghost wizard` again to change it.\n\n";
    let mut g = base_table(&env.effective("ghost.toml")).or_else(|| base_table(&env.path("/etc/ghost/ghost.toml"))).unwrap_or_default();
    g.insert("hostname".into(), a.hostname.trim().into());
    g.insert("security".into(), a.security.clone().into());
    let mut net = g.get("network").and_then(|n| n.as_table()).cloned().unwrap_or_default();
    for k in ["mode", "address", "gateway", "dns"] {
        net.remove(k);
    }
    net.insert("mode".into(), a.network.clone().into());
    if a.network == "static" {
        net.insert("address".into(), a.address.trim().into());
        if !a.gateway.trim().is_empty() {
            net.insert("gateway".into(), a.gateway.trim().into());
        }
        let dns = a.dns_list();
        if !dns.is_empty() {
            net.insert("dns".into(), toml::Value::Array(dns.into_iter().map(Into::into).collect()));
        }
    }
    g.insert("network".into(), toml::Value::Table(net));
    let mut op = toml::Table::new();
    match a.operator_kind() {
        Operator::Group(name) => op.insert("group".into(), name.into()),
        Operator::Key(line) => op.insert("key".into(), line.into()),
    };
    g.insert("operator".into(), toml::Value::Table(op));

    // model.toml: the image's file (its [serve] and [router] tables too) with the chosen list.
    let mut m = base_table(&env.path("/etc/ghost/model.toml")).unwrap_or_default();
    let choice = Choice::find(&a.model).unwrap_or(&catalog::CHOICES[0]);
    let models = choice.models(m.get("model"));
    m.insert("model".into(), models);
    m.remove("offline");
    if choice.id == catalog::NONE {
        m.insert("offline".into(), true.into());
    }
    let model_header = format!(
        "# Written by the first-boot wizard (ghost wizard): model choice `{}`; it overrides /etc/ghost/model.toml.\n\n",
        choice.id
    );
    vec![
        ("ghost.toml", format!("{header}{}", toml::to_string(&g).unwrap_or_default())),
        ("model.toml", format!("{model_header}{}", toml::to_string(&m).unwrap_or_default())),
        ("timezone", format!("{}\n", a.timezone.trim())),
    ]
}

fn base_table(path: &std::path::Path) -> Option<toml::Table> {
    toml::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Stages the files (fsynced) in `etc/.wizard-pending`; nothing the system reads changes.
pub fn stage(files: &[(&str, String)], env: &Env) -> Result<PathBuf, String> {
    let etc = env.overlay();
    let e = |what: &str, p: &std::path::Path, err: std::io::Error| format!("{what} {}: {err}", p.display());
    std::fs::create_dir_all(&etc).map_err(|err| e("creating", &etc, err))?;
    // An earlier run cut short: finish or drop it first, so that we start from a whole state.
    finish_overlay_commit(&etc).map_err(|err| e("finishing an earlier commit in", &etc, err))?;
    let pending = etc.join(OVERLAY_PENDING);
    std::fs::create_dir(&pending).map_err(|err| e("creating", &pending, err))?;
    for (name, text) in files {
        let p = pending.join(name);
        ghost_audit::util::write_atomic(&p, text.as_bytes(), 0o644).map_err(|err| e("writing", &p, err))?;
    }
    Ok(pending)
}

/// The commit point: after it, the new files are the configuration, whatever happens.
pub fn commit_point(env: &Env) -> Result<(), String> {
    let etc = env.overlay();
    let (from, to) = (etc.join(OVERLAY_PENDING), etc.join(OVERLAY_COMMIT));
    std::fs::rename(&from, &to).map_err(|err| format!("renaming {} to {}: {err}", from.display(), to.display()))?;
    ghost_audit::util::sync_dir(&etc).map_err(|err| format!("fsync {}: {err}", etc.display()))
}

/// Writes the answers' files into the overlay, all or nothing; returns their paths.
pub fn write(a: &Answers, env: &Env) -> Result<Vec<PathBuf>, String> {
    let files = render(a, env);
    stage(&files, env)?;
    commit_point(env)?;
    let etc = env.overlay();
    finish_overlay_commit(&etc).map_err(|err| format!("moving the new files into {}: {err}", etc.display()))?;
    Ok(files.iter().map(|(n, _)| etc.join(n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Env) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/ghost")).unwrap();
        std::fs::write(
            d.path().join("etc/ghost/ghost.toml"),
            "hostname = \"ghost\"\nmodules = [\"virtio_net\"]\nstop_timeout_s = 7\n[network]\nmode = \"dhcp\"\ninterface = \"eth1\"\n[console]\ntui = \"tty2\"\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/ghost/model.toml"),
            "[[model]]\nrepo = \"Qwen/Qwen2.5-0.5B-Instruct-GGUF\"\nrole = \"generate\"\nfiles = [\"q.gguf\"]\n\n[serve]\nthreads = 0\n",
        )
        .unwrap();
        let e = Env::new(d.path());
        (d, e)
    }

    fn answers() -> Answers {
        Answers {
            hostname: "box-1".into(),
            network: "static".into(),
            address: "10.0.0.5/24".into(),
            gateway: "10.0.0.1".into(),
            dns: "10.0.0.1 1.1.1.1".into(),
            model: "none".into(),
            security: "paranoid".into(),
            operator: "ops".into(),
            timezone: "Europe/Paris".into(),
        }
    }

    fn read(e: &Env, name: &str) -> toml::Table {
        toml::from_str(&std::fs::read_to_string(e.overlay().join(name)).unwrap()).unwrap()
    }

    #[test]
    fn the_files_carry_the_answers_and_keep_the_images_other_keys() {
        let (_d, e) = root();
        let paths = write(&answers(), &e).unwrap();
        assert_eq!(paths.len(), 3);
        let g = read(&e, "ghost.toml");
        assert_eq!(g["hostname"].as_str(), Some("box-1"));
        assert_eq!(g["security"].as_str(), Some("paranoid"));
        assert_eq!(g["stop_timeout_s"].as_integer(), Some(7));
        assert_eq!(g["modules"].as_array().unwrap().len(), 1);
        assert_eq!(g["console"]["tui"].as_str(), Some("tty2"));
        let n = g["network"].as_table().unwrap();
        assert_eq!(n["mode"].as_str(), Some("static"));
        assert_eq!(n["interface"].as_str(), Some("eth1"));
        assert_eq!(n["address"].as_str(), Some("10.0.0.5/24"));
        assert_eq!(n["gateway"].as_str(), Some("10.0.0.1"));
        assert_eq!(n["dns"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect::<Vec<_>>(), ["10.0.0.1", "1.1.1.1"]);
        assert_eq!(g["operator"]["group"].as_str(), Some("ops"));
        let m = read(&e, "model.toml");
        assert_eq!(m["offline"].as_bool(), Some(true));
        assert!(m["model"].as_array().unwrap().is_empty());
        assert_eq!(m["serve"]["threads"].as_integer(), Some(0));
        assert_eq!(std::fs::read_to_string(e.overlay().join("timezone")).unwrap(), "Europe/Paris\n");
        // No staging left behind.
        let names: Vec<_> = std::fs::read_dir(e.overlay()).unwrap().map(|d| d.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        // The image's own files are untouched.
        assert!(std::fs::read_to_string(e.path("/etc/ghost/ghost.toml")).unwrap().contains("hostname = \"ghost\""));
    }

    #[test]
    fn dhcp_drops_the_static_keys_and_the_image_model_choice_keeps_its_list() {
        let (_d, e) = root();
        write(&answers(), &e).unwrap();
        let a = Answers { network: "dhcp".into(), model: catalog::IMAGE.into(), ..answers() };
        write(&a, &e).unwrap();
        let n = read(&e, "ghost.toml")["network"].as_table().unwrap().clone();
        assert_eq!(n.keys().collect::<Vec<_>>(), ["interface", "mode"]);
        let m = read(&e, "model.toml");
        assert!(m.get("offline").is_none());
        assert_eq!(m["model"][0]["repo"].as_str(), Some("Qwen/Qwen2.5-0.5B-Instruct-GGUF"));
    }

    #[test]
    fn a_power_cut_before_the_commit_point_leaves_the_old_files() {
        let (_d, e) = root();
        write(&answers(), &e).unwrap();
        let before = std::fs::read_to_string(e.overlay().join("ghost.toml")).unwrap();
        // Staged, then the power goes: nothing the system reads changed.
        stage(&render(&Answers { hostname: "new".into(), ..answers() }, &e), &e).unwrap();
        assert_eq!(std::fs::read_to_string(e.overlay().join("ghost.toml")).unwrap(), before);
        // The next boot drops the stage.
        finish_overlay_commit(&e.overlay()).unwrap();
        assert_eq!(std::fs::read_to_string(e.overlay().join("ghost.toml")).unwrap(), before);
        assert!(!e.overlay().join(OVERLAY_PENDING).exists());
    }

    #[test]
    fn a_power_cut_after_the_commit_point_is_finished_at_the_next_boot() {
        let (_d, e) = root();
        write(&answers(), &e).unwrap();
        stage(&render(&Answers { hostname: "new".into(), timezone: "UTC".into(), ..answers() }, &e), &e).unwrap();
        commit_point(&e).unwrap();
        // Half moved when the power went.
        std::fs::rename(e.overlay().join(OVERLAY_COMMIT).join("timezone"), e.overlay().join("timezone")).unwrap();
        finish_overlay_commit(&e.overlay()).unwrap();
        assert_eq!(read(&e, "ghost.toml")["hostname"].as_str(), Some("new"));
        assert_eq!(std::fs::read_to_string(e.overlay().join("timezone")).unwrap(), "UTC\n");
    }
}
