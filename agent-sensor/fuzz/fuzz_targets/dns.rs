//! DNS messages from sent and received data: `parse_query` and `parse_response` must refuse
//! or parse any bytes, never panic or loop, and keep their bounds.
#![no_main]

use agent_sensor::events::dns::{parse_query, parse_response, qtype_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(q) = parse_query(data) {
        assert!(q.name.len() <= 255, "name of {} bytes", q.name.len());
        assert!(q.longest_label <= 63, "label of {} bytes", q.longest_label);
        assert!(!qtype_name(q.qtype).is_empty());
    }
    if let Some(answers) = parse_response(data) {
        assert!(answers.len() <= 64, "{} answers", answers.len());
        for answer in &answers {
            assert!(
                answer.name.len() <= 255,
                "name of {} bytes",
                answer.name.len()
            );
        }
    }
});
