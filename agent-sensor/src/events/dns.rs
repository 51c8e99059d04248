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
