//! resolv.conf parsing for the `resolvConf` option.

use std::path::Path;

use crate::types::{CniError, CniResult, Dns};

pub fn parse_file(path: &Path) -> CniResult<Dns> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CniError::io(
            format!("field \"ipam.resolvConf\": cannot read {}", path.display()),
            e,
        )
    })?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_string)),
            Some("domain") => dns.domain = words.next().unwrap_or_default().to_string(),
            Some("search") => dns.search = words.map(str::to_string).collect(),
            Some("options") => dns.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_resolv_conf() {
        let d = super::parse(
            "# c\nnameserver 1.2.3.4\nnameserver ::1\ndomain ex.com\nsearch a b\noptions ndots:5\n",
        );
        assert_eq!(d.nameservers, ["1.2.3.4", "::1"]);
        assert_eq!(d.domain, "ex.com");
        assert_eq!(d.search, ["a", "b"]);
        assert_eq!(d.options, ["ndots:5"]);
    }
}
