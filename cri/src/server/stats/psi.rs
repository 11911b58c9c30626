//! Pressure stall information (PSI) of a cgroup v2 cgroup, from its
//! `cpu.pressure`, `memory.pressure` and `io.pressure` files, for the CRI
//! `psi` fields. cgroup v1 has no per-cgroup PSI: there, as with
//! containerd, the fields stay unset.

use std::path::Path;

use berth_proto::runtime::v1 as cri;

/// The PSI of the three resources of one cgroup (each None when its file
/// is missing, e.g. on a kernel without PSI).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pressure {
    pub cpu: Option<cri::PsiStats>,
    pub memory: Option<cri::PsiStats>,
    pub io: Option<cri::PsiStats>,
}

/// Reads the pressure files of the cgroup v2 dir `dir`.
pub fn read(dir: &Path) -> Pressure {
    let file = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|text| parse(&text))
    };
    Pressure {
        cpu: file("cpu.pressure"),
        memory: file("memory.pressure"),
        io: file("io.pressure"),
    }
}

/// `some avg10=0.12 avg60=0.05 avg300=0.01 total=12345` and the same for
/// `full`; totals are microseconds in the file, nanoseconds in the CRI.
/// None when no line parses.
pub fn parse(text: &str) -> Option<cri::PsiStats> {
    let mut stats = cri::PsiStats::default();
    let mut any = false;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut stats.some,
            Some("full") => &mut stats.full,
            _ => continue,
        };
        let mut data = cri::PsiData::default();
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            match key {
                "avg10" => data.avg10 = value.parse().ok()?,
                "avg60" => data.avg60 = value.parse().ok()?,
                "avg300" => data.avg300 = value.parse().ok()?,
                "total" => data.total = value.parse::<u64>().ok()?.saturating_mul(1000),
                _ => {}
            }
        }
        *slot = Some(data);
        any = true;
    }
    any.then_some(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "some avg10=1.50 avg60=0.25 avg300=0.05 total=123456\n\
                          full avg10=0.75 avg60=0.00 avg300=0.00 total=789\n";

    #[test]
    fn both_lines_parse_with_totals_in_nanoseconds() {
        let stats = parse(SAMPLE).unwrap();
        let some = stats.some.unwrap();
        assert_eq!(some.avg10, 1.5);
        assert_eq!(some.avg60, 0.25);
        assert_eq!(some.avg300, 0.05);
        assert_eq!(some.total, 123_456_000);
        assert_eq!(stats.full.unwrap().total, 789_000);
    }

    #[test]
    fn older_kernels_have_no_full_line_for_cpu() {
        let stats = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert!(stats.some.is_some());
        assert!(stats.full.is_none());
    }

    #[test]
    fn garbage_is_no_reading() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("some avg10=x total=1\n"), None);
    }

    #[test]
    fn a_cgroup_dir_is_read_per_resource() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpu.pressure"), SAMPLE).unwrap();
        std::fs::write(dir.path().join("io.pressure"), SAMPLE).unwrap();
        let pressure = read(dir.path());
        assert!(pressure.cpu.is_some());
        assert!(pressure.memory.is_none(), "no memory.pressure file");
        assert_eq!(pressure.io, parse(SAMPLE));
    }
}
