//! The cgroup's limit on tasks: `pids.max` (Docker's `--pids-limit`, Kubernetes' `podPidsLimit`,
//! systemd's `TasksMax=`), which counts threads like RLIMIT_NPROC does but for everything in the
//! group. Read from cgroup v2 and from v1's `pids` controller, at this process's own group and
//! every group above it up to the root of the mounted hierarchy, since each of them limits it.
//! The parsing is pure, over the text of `/proc/self/cgroup` and `/proc/self/mountinfo`.

use std::path::PathBuf;

/// The smallest `pids.max` that applies to this process, or `None` where no group sets one (or
/// cgroups are not mounted).
pub(crate) fn pids_limit() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    pids_dirs(&cgroup, &mountinfo)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("pids.max")).ok())
        .filter_map(|text| parse_max(&text))
        .min()
}

/// A `pids.max` file's value: a number, or `max` (no limit: `None`).
pub(crate) fn parse_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The directories whose `pids.max` limit this process: for each mounted hierarchy that counts
/// tasks (v2, or v1 with the `pids` controller), the process's group and each one above it, up to
/// the mount point.
pub(crate) fn pids_dirs(cgroup: &str, mountinfo: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for mount in mountinfo.lines().filter_map(Mount::parse) {
        let group = cgroup.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let counts_tasks = match mount.version {
                CgroupVersion::V2 => controllers.is_empty(),
                CgroupVersion::V1 => controllers.split(',').any(|c| c == "pids"),
            };
            counts_tasks.then_some(path)
        });
        if let Some(group) = group {
            dirs.extend(mount.dirs_for(group));
        }
    }
    dirs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgroupVersion {
    V1,
    V2,
}

/// A cgroup mount that counts tasks: where it is, and which group of the hierarchy it shows.
#[derive(Debug)]
struct Mount<'a> {
    version: CgroupVersion,
    /// The group of the hierarchy at the mount point (`/` unless a container mounted its own).
    root: &'a str,
    point: PathBuf,
}

impl<'a> Mount<'a> {
    /// A mountinfo line (`id parent dev root point options [tags] - type source super`), if it is
    /// a cgroup v2 mount or a v1 mount with the pids controller.
    fn parse(line: &'a str) -> Option<Mount<'a>> {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = before.split(' ');
        let (root, point) = (fields.nth(3)?, fields.next()?);
        let mut after = after.split(' ');
        let (fstype, super_options) = (after.next()?, after.nth(1).unwrap_or(""));
        let version = match fstype {
            "cgroup2" => CgroupVersion::V2,
            "cgroup" if super_options.split(',').any(|o| o == "pids") => CgroupVersion::V1,
            _ => return None,
        };
        Some(Mount {
            version,
            root,
            point: PathBuf::from(unescape(point)),
        })
    }

    /// The directories of `group` and its ancestors under this mount, deepest first. A group
    /// outside the mount's root (another namespace's view) leaves only the mount point.
    fn dirs_for(&self, group: &str) -> Vec<PathBuf> {
        let relative = match group.strip_prefix(self.root.trim_end_matches('/')) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => "",
        };
        let mut dir = self.point.clone();
        let mut dirs = vec![dir.clone()];
        for part in relative.split('/').filter(|p| !p.is_empty() && *p != "..") {
            dir.push(part);
            dirs.push(dir.clone());
        }
        dirs.reverse();
        dirs
    }
}

/// mountinfo writes a space, tab, newline and backslash in a path as octal escapes.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_MOUNT: &str =
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate";

    fn paths(dirs: &[PathBuf]) -> Vec<&str> {
        dirs.iter().map(|d| d.to_str().unwrap()).collect()
    }

    #[test]
    fn pids_max_is_a_number_or_no_limit() {
        assert_eq!(parse_max("4096\n"), Some(4096));
        assert_eq!(parse_max("max\n"), None);
        assert_eq!(parse_max(""), None);
    }

    #[test]
    fn v2_reads_the_group_and_every_group_above_it() {
        let cgroup = "0::/system.slice/tcp-router.service\n";
        assert_eq!(
            paths(&pids_dirs(cgroup, V2_MOUNT)),
            [
                "/sys/fs/cgroup/system.slice/tcp-router.service",
                "/sys/fs/cgroup/system.slice",
                "/sys/fs/cgroup",
            ]
        );
    }

    #[test]
    fn a_container_with_its_own_namespace_reads_its_root() {
        assert_eq!(paths(&pids_dirs("0::/\n", V2_MOUNT)), ["/sys/fs/cgroup"]);
    }

    #[test]
    fn v1_reads_the_pids_hierarchy_from_its_mount_root() {
        // Docker on cgroup v1: the container's group is the root of what it has mounted.
        let cgroup = "12:pids:/docker/0123abcd\n4:memory:/docker/0123abcd\n1:name=systemd:/docker/0123abcd\n";
        let mountinfo = "\
39 31 0:36 /docker/0123abcd /sys/fs/cgroup/pids ro,nosuid - cgroup cgroup rw,pids
35 31 0:32 /docker/0123abcd /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755";
        assert_eq!(
            paths(&pids_dirs(cgroup, mountinfo)),
            ["/sys/fs/cgroup/pids"]
        );
        // On the host, the same hierarchy mounted at its root: the group and its ancestors.
        let host = "39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids";
        assert_eq!(
            paths(&pids_dirs(cgroup, host)),
            [
                "/sys/fs/cgroup/pids/docker/0123abcd",
                "/sys/fs/cgroup/pids/docker",
                "/sys/fs/cgroup/pids"
            ]
        );
    }

    #[test]
    fn hybrid_hosts_read_both_hierarchies_and_others_are_ignored() {
        let cgroup = "8:pids:/user.slice\n0::/user.slice/session-1.scope\n";
        let mountinfo = "\
39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
50 23 0:40 / /mnt/with\\040space rw - ext4 /dev/sda1 rw";
        assert_eq!(
            paths(&pids_dirs(cgroup, mountinfo)),
            [
                "/sys/fs/cgroup/pids/user.slice",
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/unified/user.slice/session-1.scope",
                "/sys/fs/cgroup/unified/user.slice",
                "/sys/fs/cgroup/unified",
            ]
        );
        assert!(pids_dirs(cgroup, "").is_empty(), "no cgroup mounted");
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
    }
}
