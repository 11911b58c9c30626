//! Interface counters of a network namespace, read from `/proc/<pid>/net/dev`
//! of a process inside it (the pause process): no setns needed.

/// One interface's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of `pid`'s network namespace other than loopback.
pub fn read(pid: i32) -> std::io::Result<Vec<InterfaceCounters>> {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev")).map(|text| parse(&text))
}

/// Parses the kernel's table: two header lines, then `name: <8 receive
/// columns> <8 transmit columns>`.
fn parse(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let values: Vec<u64> = counters
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            (name != "lo" && values.len() >= 16).then(|| InterfaceCounters {
                name: name.to_string(),
                rx_bytes: values[0],
                rx_packets: values[1],
                rx_errors: values[2],
                rx_dropped: values[3],
                tx_bytes: values[8],
                tx_packets: values[9],
                tx_errors: values[10],
                tx_dropped: values[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    1846      21    3    0    0     0          0         0      726       9    4    0    0     0       0          0
";

    #[test]
    fn reads_counters_without_loopback() {
        assert_eq!(
            parse(SAMPLE),
            vec![InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 1846,
                rx_packets: 21,
                rx_errors: 3,
                rx_dropped: 0,
                tx_bytes: 726,
                tx_packets: 9,
                tx_errors: 4,
                tx_dropped: 0,
            }]
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(parse("h1\nh2\neth0: 1 2 x\nbad line\n").is_empty());
    }
}
