//! Keeping a supervisor droplet's disk free: the image pruning cloud-init installs.
//!
//! Every deployment of a Trigger.dev project adds an image to every droplet that ran one of its
//! runs (the supervisor pulls a run's image when Docker does not have it:
//! apps/supervisor/src/workloadManager/docker.ts), and nothing removes them; a full disk fails
//! every run on the droplet. `ops-prune.timer` runs `/opt/trigger/prune.sh` daily: it removes
//! the images no container uses (running or stopped) that are older than a day, and keeps
//! - the images of the compose (supervisor, docker-socket-proxy, the drain signal's Redis);
//! - the newest image of each deployment environment: the webapp names a deployment's image
//!   `<registry>/<namespace>/<project ref>:<version>.<environment type>.<short code>`
//!   (apps/webapp/app/v3/getDeploymentImageRef.server.ts), and deployments only move forward,
//!   so the newest of a repository and environment type is the current deployment's (one for
//!   all preview branches of a project). Other images keep the newest of their repository.
//!
//! A run locked to an older deployment whose image was pruned pulls it again (a slower start,
//! not a failure). "Older than a day" is the image's `Created` time (its build), as Docker's
//! own `until` filter reads it: Docker records no pull or last-use time.

/// The script the timer runs.
pub const SCRIPT: &str = "/opt/trigger/prune.sh";
pub const SERVICE: &str = "/etc/systemd/system/ops-prune.service";
pub const TIMER: &str = "/etc/systemd/system/ops-prune.timer";
/// Images younger than this stay, used or not.
pub const MIN_AGE_SECS: u64 = 24 * 3600;

/// `ops-prune.service`: one pass, at idle priority.
pub fn service() -> String {
    format!(
        "# Written by trigger-ops: removes images no container uses (see {SCRIPT}).\n\
[Unit]\n\
Description=trigger-ops: remove unused Docker images older than a day\n\
After=docker.service\n\
Requires=docker.service\n\
\n\
[Service]\n\
Type=oneshot\n\
ExecStart={SCRIPT}\n\
Nice=10\n\
IOSchedulingClass=idle\n"
    )
}

/// `ops-prune.timer`: daily, spread over an hour, caught up after a droplet was off.
pub fn timer() -> String {
    "# Written by trigger-ops.\n\
[Unit]\n\
Description=trigger-ops: prune unused Docker images daily\n\
\n\
[Timer]\n\
OnCalendar=daily\n\
RandomizedDelaySec=1h\n\
Persistent=true\n\
\n\
[Install]\n\
WantedBy=timers.target\n"
        .to_string()
}

/// The pruning pass; `keep` are the compose's images (never removed, used or not).
pub fn script(keep: &[&str]) -> String {
    format!(
        r#"#!/bin/sh
# Written by trigger-ops. Run daily by ops-prune.timer: removes the images no container uses
# that are older than a day; keeps the compose's images and the newest image of each
# deployment environment (repository and <version>.<environment>.<code> tag).
set -u
age=${{OPS_PRUNE_AGE_SECS:-{MIN_AGE_SECS}}}
keep="{keep}"
cutoff=$(date -u -d "@$(( $(date +%s) - age ))" +%Y-%m-%dT%H:%M:%S)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: >"$work/kept"
# Every container's image, running or stopped (docker refuses to remove those anyway).
for c in $(docker ps -aq --no-trunc); do
  docker inspect --format '{{{{.Image}}}}' "$c" >>"$work/kept" 2>/dev/null
done
for ref in $keep; do
  docker image inspect --format '{{{{.Id}}}}' "$ref" >>"$work/kept" 2>/dev/null
done
images=$(docker image ls -q --no-trunc | sort -u)
[ -n "$images" ] || exit 0
# shellcheck disable=SC2086
docker image inspect --format '{{{{.Id}}}} {{{{.Created}}}} {{{{join .RepoTags ","}}}}' $images |
  sort -k2,2r >"$work/images"
# Newest first: the first image seen for a repository and environment is its current one.
awk '
  {{ n = split($3, tags, ",")
    for (i = 1; i <= n; i++) {{
      t = tags[i]; c = index(t, ":"); while ((j = index(substr(t, c + 1), ":")) > 0) c += j
      repo = substr(t, 1, c - 1); tag = substr(t, c + 1)
      key = repo
      if (tag ~ /^[0-9]+\.[0-9]+\.[a-z]+\.[A-Za-z0-9]+$/) {{ split(tag, f, "."); key = repo " " f[3] }}
      if (!(key in seen)) {{ seen[key] = 1; print $1 }}
    }} }}' "$work/images" >>"$work/kept"
removed=0
while read -r id created tags; do
  grep -qxF "$id" "$work/kept" && continue
  [ "$(printf '%s\n%s\n' "$created" "$cutoff" | sort | head -n 1)" = "$created" ] || continue
  # By its tags when it has some (an id with several tags is refused), else by id.
  # shellcheck disable=SC2046
  if docker image rm $(if [ -n "$tags" ]; then echo "$tags" | tr ',' ' '; else echo "$id"; fi) >/dev/null; then
    removed=$((removed + 1))
    echo "ops-prune: removed $id ${{tags:-<untagged>}} (created $created)"
  fi
done <"$work/images"
echo "ops-prune: removed $removed image(s); $(df -h --output=avail / | tail -n 1 | tr -d ' ') free on /"
"#,
        keep = keep.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_the_compose_images_it_keeps() {
        let s = script(&[
            "ghcr.io/triggerdotdev/supervisor:v4.5.12",
            "redis:7.4.2-alpine",
        ]);
        assert!(s.contains("keep=\"ghcr.io/triggerdotdev/supervisor:v4.5.12 redis:7.4.2-alpine\""));
        assert!(
            s.contains("{{.Id}} {{.Created}} {{join .RepoTags \",\"}}"),
            "{s}"
        );
        assert!(timer().contains("OnCalendar=daily"));
        assert!(service().contains(&format!("ExecStart={SCRIPT}")));
    }
}
