//! DNS messages seen in sent data: the question of a query (name and type).

/// The first question of a DNS query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuestion {
    /// Labels joined with dots, each label's bytes kept (escaped later like any name).
    pub name: Vec<u8>,
    pub qtype: u16,
    /// Longest single label, for tunnel detection.
    pub longest_label: usize,
}

/// Parses a DNS query message (over UDP: no length prefix). `None` for anything that is not a
/// well-formed query with at least one question; compression pointers are refused in a
/// question (queries never need them) so hostile input cannot loop.
pub fn parse_query(msg: &[u8]) -> Option<DnsQuestion> {
    if msg.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let is_response = flags & 0x8000 != 0;
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if is_response || qdcount == 0 {
        return None;
    }
    let mut at = 12;
    let mut name = Vec::new();
    let mut longest_label = 0;
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        let label = msg.get(at..at + len)?;
        if !name.is_empty() {
            name.push(b'.');
        }
        name.extend_from_slice(label);
        longest_label = longest_label.max(len);
        at += len;
        if name.len() > 255 {
            return None;
        }
    }
    // QTYPE and QCLASS must both be there.
    let fixed = msg.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    Some(DnsQuestion {
        name,
        qtype,
        longest_label,
    })
}

/// Name of a query type, for JSON.
pub fn qtype_name(qtype: u16) -> String {
    match qtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        other => format!("TYPE{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut msg = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            msg.push(label.len() as u8);
            msg.extend_from_slice(label.as_bytes());
        }
        msg.push(0);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&1u16.to_be_bytes());
        msg
    }

    #[test]
    fn parses_questions() {
        let q = parse_query(&query("api.example.com", 28)).unwrap();
        assert_eq!(q.name, b"api.example.com");
        assert_eq!(q.qtype, 28);
        assert_eq!(q.longest_label, 7);
        assert_eq!(qtype_name(q.qtype), "AAAA");
    }

    #[test]
    fn refuses_responses_truncations_and_pointers() {
        let msg = query("a.b", 1);
        for cut in 0..msg.len() - 1 {
            assert_eq!(parse_query(&msg[..cut]), None, "cut {cut}");
        }
        let mut response = msg.clone();
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), None);
        let mut pointer = msg.clone();
        pointer[12] = 0xc0;
        assert_eq!(parse_query(&pointer), None);
    }
}

/// One address record of a DNS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The name the question asked for (answers follow CNAME chains back to it).
    pub name: Vec<u8>,
    pub ip: std::net::IpAddr,
    pub ttl: u32,
}

/// Reads a possibly compressed name at `at`; returns it and the offset just past it in the
/// message (not past any pointer target). Pointer chains are bounded so hostile input cannot
/// loop.
fn read_name(msg: &[u8], mut at: usize) -> Option<(Vec<u8>, usize)> {
    let mut name = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(at)? as usize;
        if len & 0xc0 == 0xc0 {
            let target = ((len & 0x3f) << 8) | *msg.get(at + 1)? as usize;
            end.get_or_insert(at + 2);
            if target >= at {
                return None; // pointers only go backwards
            }
            at = target;
            continue;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        at += 1;
        if len == 0 {
            return Some((name, end.unwrap_or(at)));
        }
        if !name.is_empty() {
            name.push(b'.');
        }
        name.extend_from_slice(msg.get(at..at + len)?);
        at += len;
        if name.len() > 255 {
            return None;
        }
    }
    None
}

/// Parses a DNS response: the A and AAAA records, each mapped to the question's name.
pub fn parse_response(msg: &[u8]) -> Option<Vec<DnsAnswer>> {
    if msg.len() < 12 || msg[2] & 0x80 == 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    let ancount = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    if qdcount != 1 {
        return None;
    }
    let (question, after) = read_name(msg, 12)?;
    let mut at = after + 4;
    let mut answers = Vec::new();
    for _ in 0..ancount.min(64) {
        let (_, after) = read_name(msg, at)?;
        let fixed = msg.get(after..after + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let rdata = msg.get(after + 10..after + 10 + rdlen)?;
        let ip = match (rtype, rdata.len()) {
            (1, 4) => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(rdata).ok()?)),
            (28, 16) => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(rdata).ok()?)),
            _ => None,
        };
        if let Some(ip) = ip {
            answers.push(DnsAnswer {
                name: question.clone(),
                ip,
                ttl,
            });
        }
        at = after + 10 + rdlen;
    }
    Some(answers)
}

#[cfg(test)]
mod response_tests {
    use super::*;

    /// A response to `name` with one CNAME and one A and one AAAA record.
    pub fn response(name: &str) -> Vec<u8> {
        let mut msg = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
        for label in name.split('.') {
            msg.push(label.len() as u8);
            msg.extend_from_slice(label.as_bytes());
        }
        msg.extend_from_slice(&[0, 0, 1, 0, 1]);
        // CNAME -> "x" + pointer to the question name
        msg.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'x', 0xc0, 12]);
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 10, 1, 2, 3]);
        msg.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 1, 0, 0, 16]);
        msg.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        msg
    }

    #[test]
    fn maps_addresses_to_the_question() {
        let answers = parse_response(&response("api.example.com")).unwrap();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].name, b"api.example.com");
        assert_eq!(answers[0].ip.to_string(), "10.1.2.3");
        assert_eq!(answers[0].ttl, 256);
        assert_eq!(answers[1].ip.to_string(), "2001:db8::1");
    }

    #[test]
    fn hostile_responses_are_refused_not_looped() {
        let good = response("a.b");
        for cut in 0..good.len() {
            let _ = parse_response(&good[..cut]);
        }
        // A pointer to itself.
        let mut looping = good.clone();
        looping[12] = 0xc0;
        looping[13] = 12;
        assert_eq!(parse_response(&looping), None);
        // A query is not a response.
        let mut query = good.clone();
        query[2] = 0x01;
        assert_eq!(parse_response(&query), None);
    }
}
