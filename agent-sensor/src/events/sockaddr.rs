//! Socket addresses as the process passed them (raw `struct sockaddr` bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SockAddr {
    Inet {
        ip: IpAddr,
        port: u16,
    },
    /// Path bytes; an abstract socket's name starts with NUL, shown as `@`.
    Unix {
        path: Vec<u8>,
        is_abstract: bool,
    },
    /// A family the sensor does not decode (netlink, packet…).
    Other {
        family: u16,
    },
}

/// Parses raw sockaddr bytes; `None` when too short for the family they claim.
pub fn parse(raw: &[u8]) -> Option<SockAddr> {
    let family = u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]);
    match family {
        AF_INET => {
            let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
            let ip: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SockAddr::Inet {
                ip: IpAddr::V4(Ipv4Addr::from(ip)),
                port,
            })
        }
        AF_INET6 => {
            let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
            let ip: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            let ip = Ipv6Addr::from(ip);
            // v4-mapped addresses are IPv4 destinations for every policy decision.
            let ip = ip
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(ip));
            Some(SockAddr::Inet { ip, port })
        }
        AF_UNIX => {
            let path = raw.get(2..).unwrap_or_default();
            let is_abstract = path.first() == Some(&0);
            let path = if is_abstract { &path[1..] } else { path };
            let end = if is_abstract {
                path.len()
            } else {
                path.iter().position(|b| *b == 0).unwrap_or(path.len())
            };
            Some(SockAddr::Unix {
                path: path[..end].to_vec(),
                is_abstract,
            })
        }
        family => Some(SockAddr::Other { family }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_families_and_rejects_short_input() {
        let mut v4 = vec![2, 0, 0x1f, 0x90, 127, 0, 0, 1];
        v4.extend([0; 8]);
        assert_eq!(
            parse(&v4),
            Some(SockAddr::Inet {
                ip: "127.0.0.1".parse().unwrap(),
                port: 8080
            })
        );
        let mut v6 = vec![10, 0, 0, 53, 0, 0, 0, 0];
        v6.extend([0u8; 10]);
        v6.extend([0xff, 0xff, 10, 0, 0, 1]);
        v6.extend([0; 4]);
        assert_eq!(
            parse(&v6),
            Some(SockAddr::Inet {
                ip: "10.0.0.1".parse().unwrap(),
                port: 53
            })
        );
        assert_eq!(
            parse(b"\x01\x00/run/x.sock\0junk"),
            Some(SockAddr::Unix {
                path: b"/run/x.sock".to_vec(),
                is_abstract: false
            })
        );
        assert_eq!(parse(&v4[..6]), None);
        assert_eq!(parse(&[2]), None);
        assert_eq!(parse(&[]), None);
    }
}
