//! Machine presets against droplet sizes, pure. Trigger.dev gives every run a preset (its
//! `"TaskRun"."machinePreset"` once dequeued, else the task's `machineConfig`, else small-1x)
//! and the supervisor starts its container with that many CPUs and that much memory; Docker
//! refuses a container asking for more CPUs than the host has, so such a run bounces between
//! supervisors and ends in `SYSTEM_FAILURE`. Values: `@trigger.dev/platform` (docs/supervisor.md).

use super::facts::Machine;
use crate::clients::webapp_db::PresetNeed;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub cpu: f64,
    pub memory_gb: f64,
}

/// Trigger.dev's presets, smallest first.
pub const PRESETS: [Preset; 7] = [
    Preset {
        name: "micro",
        cpu: 0.25,
        memory_gb: 0.25,
    },
    Preset {
        name: "small-1x",
        cpu: 0.5,
        memory_gb: 0.5,
    },
    Preset {
        name: "small-2x",
        cpu: 1.0,
        memory_gb: 1.0,
    },
    Preset {
        name: "medium-1x",
        cpu: 1.0,
        memory_gb: 2.0,
    },
    Preset {
        name: "medium-2x",
        cpu: 2.0,
        memory_gb: 4.0,
    },
    Preset {
        name: "large-1x",
        cpu: 4.0,
        memory_gb: 8.0,
    },
    Preset {
        name: "large-2x",
        cpu: 8.0,
        memory_gb: 16.0,
    },
];

pub const DEFAULT: Preset = PRESETS[1];

fn named(name: &str) -> Option<Preset> {
    PRESETS.iter().copied().find(|p| p.name == name)
}

/// A run's preset from what the database holds: a preset name (`machinePreset`), or the task's
/// `machineConfig` JSON (`{"preset": …}` or `{"cpu": …, "memory": …}`, the smallest preset that
/// fits, as the run engine resolves it); anything else is the default, small-1x.
pub fn resolve(raw: Option<&str>) -> Preset {
    let Some(raw) = raw.map(str::trim) else {
        return DEFAULT;
    };
    if let Some(p) = named(raw) {
        return p;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) else {
        return DEFAULT;
    };
    if let Some(p) = v.get("preset").and_then(|p| p.as_str()).and_then(named) {
        return p;
    }
    match (
        v.get("cpu").and_then(|c| c.as_f64()),
        v.get("memory").and_then(|m| m.as_f64()),
    ) {
        (Some(cpu), Some(mem)) => PRESETS
            .iter()
            .copied()
            .find(|p| p.cpu >= cpu && p.memory_gb >= mem)
            .unwrap_or(DEFAULT),
        _ => DEFAULT,
    }
}

/// Whether a run of this preset can start on a droplet of this size: enough CPUs (Docker's
/// hard check) and enough memory.
pub fn fits(p: &Preset, s: &Machine) -> bool {
    p.cpu <= f64::from(s.vcpus) && p.memory_gb * 1024.0 <= s.memory as f64
}

/// How many runs of this preset one droplet of this size takes at once (by CPU and memory).
pub fn per_droplet(p: &Preset, s: &Machine) -> u32 {
    let by_cpu = f64::from(s.vcpus) / p.cpu;
    let by_mem = s.memory as f64 / (p.memory_gb * 1024.0);
    by_cpu.min(by_mem).floor().max(0.0) as u32
}

/// The cheapest size available in `region` that fits `p` (fewest CPUs on a tie).
pub fn smallest_fitting<'a>(p: &Preset, sizes: &'a [Machine], region: &str) -> Option<&'a Machine> {
    sizes
        .iter()
        .filter(|s| s.available && (s.regions.is_empty() || s.regions.iter().any(|r| r == region)))
        .filter(|s| fits(p, s))
        .min_by(|a, b| {
            a.price_monthly
                .total_cmp(&b.price_monthly)
                .then(a.vcpus.cmp(&b.vcpus))
                .then(a.memory.cmp(&b.memory))
        })
}

/// Runs of one preset that cannot start on the droplets' size.
#[derive(Debug, Clone, PartialEq)]
pub struct Misfit {
    pub preset: Preset,
    pub waiting: u64,
    pub failed: u64,
}

/// The presets the runs need that `size` cannot take, largest first.
pub fn misfits(needs: &[PresetNeed], size: &Machine) -> Vec<Misfit> {
    let mut out: Vec<Misfit> = Vec::new();
    for n in needs {
        let p = resolve(n.preset.as_deref());
        if fits(&p, size) {
            continue;
        }
        let i = match out.iter().position(|m| m.preset.name == p.name) {
            Some(i) => i,
            None => {
                out.push(Misfit {
                    preset: p,
                    waiting: 0,
                    failed: 0,
                });
                out.len() - 1
            }
        };
        if n.kind == "waiting" {
            out[i].waiting += n.runs;
        } else {
            out[i].failed += n.runs;
        }
    }
    out.sort_by(|a, b| {
        b.preset
            .cpu
            .total_cmp(&a.preset.cpu)
            .then(b.preset.memory_gb.total_cmp(&a.preset.memory_gb))
    });
    out
}

/// The largest preset any of the runs need (the default when none).
pub fn largest(needs: &[PresetNeed]) -> Preset {
    needs
        .iter()
        .map(|n| resolve(n.preset.as_deref()))
        .fold(DEFAULT, |a, b| {
            if (b.cpu, b.memory_gb) > (a.cpu, a.memory_gb) {
                b
            } else {
                a
            }
        })
}

/// `4 vCPU, 8 GB`.
pub fn describe_size(s: &Machine) -> String {
    format!("{} vCPU, {} GB", s.vcpus, gb(s.memory as f64 / 1024.0))
}

pub fn gb(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// What the preset check found: lines, failures, and a bigger size for SUPERVISOR_SIZE=auto.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fit {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
    pub auto_size: Option<String>,
}

/// Whether the preset check needs the platform's sizes: only when some run needs more than
/// small-1x.
pub fn needs_sizes(needs: &[PresetNeed]) -> bool {
    let largest = largest(needs);
    largest.cpu > DEFAULT.cpu || largest.memory_gb > DEFAULT.memory_gb
}

/// Do our group's waiting (and recently system-failed) runs fit the droplets' `size`? `sizes`
/// are the platform's (or why they are unknown); with `auto`, a size too small grows to the
/// smallest that fits, else the task fails naming it.
pub fn fit(
    needs: &[PresetNeed],
    sizes: Result<&[Machine], String>,
    size: &str,
    region: &str,
    auto: bool,
) -> Fit {
    let mut fit = Fit::default();
    let sizes = match sizes {
        Ok(v) => v,
        Err(e) => {
            fit.lines
                .push(format!("machine presets not checked this run: {e}"));
            return fit;
        }
    };
    let Some(current) = sizes.iter().find(|z| z.slug == size) else {
        fit.failures.push(format!(
            "SUPERVISOR_SIZE={size} is not a DigitalOcean size (GET /v2/sizes): set one such as s-2vcpu-2gb"
        ));
        return fit;
    };
    for m in &misfits(needs, current) {
        let head = misfit_line(m, size, current);
        match smallest_fitting(&m.preset, sizes, region) {
            Some(b) if auto => {
                if fit.auto_size.is_none() {
                    fit.lines.push(format!(
                        "{head}; SUPERVISOR_SIZE=auto: the droplets become {} ({}, ${}/month), drained and replaced one by one",
                        b.slug,
                        describe_size(b),
                        b.price_monthly
                    ));
                    fit.auto_size = Some(b.slug.clone());
                }
            }
            Some(b) => fit.failures.push(format!(
                "{head}: set SUPERVISOR_SIZE={} (the smallest size that fits, {}, ${}/month) or SUPERVISOR_SIZE=auto",
                b.slug,
                describe_size(b),
                b.price_monthly
            )),
            None => fit.failures.push(format!(
                "{head}: no size available in {region} fits it; use a smaller preset or another SUPERVISOR_REGION"
            )),
        }
    }
    fit
}

/// What one misfit does to its runs.
fn misfit_line(m: &Misfit, size: &str, current: &Machine) -> String {
    let counts = match (m.waiting, m.failed) {
        (w, 0) => format!("{w} waiting run(s)"),
        (0, f) => format!("{f} run(s) failed by the system in the last hour"),
        (w, f) => format!("{w} waiting run(s) and {f} failed by the system in the last hour"),
    };
    format!(
        "{counts} need machine preset {} ({} vCPU, {} GB), more than the droplets' size {size} ({}): Docker refuses such a container, so these runs bounce between supervisors and end in SYSTEM_FAILURE",
        m.preset.name,
        gb(m.preset.cpu),
        gb(m.preset.memory_gb),
        describe_size(current)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(slug: &str, vcpus: u32, memory: u64, price: f64) -> Machine {
        Machine {
            slug: slug.into(),
            vcpus,
            memory,
            disk: 50,
            price_monthly: price,
            regions: vec!["nyc1".into()],
            available: true,
        }
    }

    fn need(kind: &str, preset: Option<&str>, runs: u64) -> PresetNeed {
        PresetNeed {
            kind: kind.into(),
            preset: preset.map(str::to_string),
            runs,
        }
    }

    #[test]
    fn a_preset_comes_from_the_name_the_task_config_or_the_default() {
        assert_eq!(resolve(Some("large-1x")).name, "large-1x");
        assert_eq!(resolve(Some(r#"{"preset":"medium-2x"}"#)).name, "medium-2x");
        // {cpu, memory}: the smallest preset that fits, as the run engine picks it.
        assert_eq!(resolve(Some(r#"{"cpu":2,"memory":3}"#)).name, "medium-2x");
        assert_eq!(resolve(None).name, "small-1x");
        assert_eq!(resolve(Some("gigantic")).name, "small-1x");
    }

    #[test]
    fn a_large_run_does_not_fit_the_default_droplet_and_the_cheapest_fitting_size_is_named() {
        let sizes = vec![
            size("s-2vcpu-2gb", 2, 2048, 18.0),
            size("s-4vcpu-8gb", 4, 8192, 48.0),
            size("c-4", 4, 8192, 84.0),
            size("s-8vcpu-16gb", 8, 16384, 96.0),
        ];
        let large = resolve(Some("large-1x"));
        assert!(!fits(&large, &sizes[0]));
        assert_eq!(
            smallest_fitting(&large, &sizes, "nyc1").unwrap().slug,
            "s-4vcpu-8gb"
        );
        assert!(smallest_fitting(&large, &sizes, "sfo3").is_none());
        let m = misfits(
            &[
                need("waiting", Some("large-1x"), 2),
                need("failed", Some("large-1x"), 1),
                need("waiting", None, 9),
            ],
            &sizes[0],
        );
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].preset.name, m[0].waiting, m[0].failed),
            ("large-1x", 2, 1)
        );
    }

    #[test]
    fn capacity_per_droplet_is_bounded_by_cpu_and_memory() {
        let s = size("s-2vcpu-2gb", 2, 2048, 18.0);
        assert_eq!(per_droplet(&DEFAULT, &s), 4);
        assert_eq!(per_droplet(&resolve(Some("medium-1x")), &s), 1);
        assert_eq!(per_droplet(&resolve(Some("large-1x")), &s), 0);
    }

    #[test]
    fn the_preset_fit_grows_an_auto_size_or_fails_naming_the_smallest_size_that_fits() {
        let sizes = vec![
            size("s-1vcpu-2gb", 1, 2048, 12.0),
            size("s-2vcpu-4gb", 2, 4096, 24.0),
            size("s-4vcpu-8gb", 4, 8192, 48.0),
        ];
        let needs = [need("waiting", Some("large-1x"), 3)];
        assert!(needs_sizes(&needs));
        assert!(!needs_sizes(&[need("waiting", Some("small-1x"), 5)]));
        let f = fit(&needs, Ok(&sizes), "s-1vcpu-2gb", "nyc1", false);
        assert_eq!((f.lines.len(), f.auto_size.as_deref()), (0, None));
        assert!(
            f.failures[0].starts_with("3 waiting run(s) need machine preset large-1x")
                && f.failures[0].contains("set SUPERVISOR_SIZE=s-4vcpu-8gb"),
            "{:?}",
            f.failures
        );
        let f = fit(&needs, Ok(&sizes), "s-1vcpu-2gb", "nyc1", true);
        assert_eq!(f.auto_size.as_deref(), Some("s-4vcpu-8gb"));
        assert!(f.failures.is_empty(), "{:?}", f.failures);
        assert!(f.lines[0].contains("SUPERVISOR_SIZE=auto: the droplets become s-4vcpu-8gb"));
        let f = fit(&needs, Ok(&sizes[..2]), "s-1vcpu-2gb", "nyc1", true);
        assert!(
            f.failures[0].contains("no size available in nyc1 fits it"),
            "{:?}",
            f.failures
        );
        let f = fit(&needs, Ok(&sizes), "s-nope", "nyc1", false);
        assert!(f.failures[0].starts_with("SUPERVISOR_SIZE=s-nope is not a DigitalOcean size"));
        let f = fit(&needs, Err("HTTP 500".into()), "s-1vcpu-2gb", "nyc1", false);
        assert_eq!(f.lines, ["machine presets not checked this run: HTTP 500"]);
        assert!(f.failures.is_empty());
    }
}
