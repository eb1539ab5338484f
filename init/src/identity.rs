//! Users and groups from /etc/passwd and /etc/group. PID 1 is static (no NSS), so it reads
//! the files itself; numeric ids are accepted as they are.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

pub fn lookup_user(passwd: &str, name: &str) -> Option<User> {
    if let Ok(uid) = name.parse::<u32>() {
        return Some(passwd_entries(passwd).find(|(_, u)| u.uid == uid).map(|(_, u)| u).unwrap_or(User { uid, gid: uid, home: "/".into() }));
    }
    passwd_entries(passwd).find(|(n, _)| *n == name).map(|(_, u)| u)
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = (&str, User)> {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some((f[0], User { uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5].to_string() }))
    })
}

pub fn lookup_group(group: &str, name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    group_entries(group).find(|(n, _, _)| *n == name).map(|(_, g, _)| g)
}

/// The groups that list `user` as a member.
pub fn supplementary_groups(group: &str, user: &str) -> Vec<u32> {
    group_entries(group).filter(|(_, _, members)| members.split(',').any(|m| m == user)).map(|(_, g, _)| g).collect()
}

fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, &str)> {
    group.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some((f[0], f[2].parse().ok()?, f[3]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nredis:x:104:108::/var/lib/redis:/usr/sbin/nologin\nbroken line\n";
    const GROUP: &str = "root:x:0:\nredis:x:108:\nghost:x:900:redis,alice\nadm:x:4:alice\n";

    #[test]
    fn users_groups_and_members() {
        assert_eq!(lookup_user(PASSWD, "redis"), Some(User { uid: 104, gid: 108, home: "/var/lib/redis".into() }));
        assert_eq!(lookup_user(PASSWD, "1234").unwrap().uid, 1234);
        assert_eq!(lookup_user(PASSWD, "0").unwrap().home, "/root");
        assert_eq!(lookup_user(PASSWD, "nobody-here"), None);
        assert_eq!(lookup_group(GROUP, "ghost"), Some(900));
        assert_eq!(lookup_group(GROUP, "nope"), None);
        assert_eq!(supplementary_groups(GROUP, "redis"), [900]);
        assert_eq!(supplementary_groups(GROUP, "alice"), [900, 4]);
    }
}
