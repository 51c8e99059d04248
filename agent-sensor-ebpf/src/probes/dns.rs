//! DNS answers an enforced agent receives, parsed in the kernel at recv exit, before the
//! agent can use them: if the question's name is one its policy allows, the answer's
//! addresses join its in-kernel allowlist. A connection that follows at once finds them there
//! (a user-space update would race it).
//!
//! The parser runs in its own program (tail-called), and its long loops run under bpf_loop
//! with their state in the per-CPU scratch map, so the verifier checks each step once.

use core::ffi::c_void;

use agent_sensor_common::egress::{
    name_flags, name_hash_step, EgressKey4, EgressKey6, EgressPorts, NameKey,
};
use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_user},
    macros::btf_tracepoint,
    maps::lpm_trie::Key,
    programs::BtfTracePointContext,
};

use crate::maps::{
    DnsScratch, ALLOWED_NAMES, DNS_BYTES, DNS_MAX_LABELS, DNS_SCRATCH, EGRESS_AGENTS,
    EGRESS_ALLOW4, EGRESS_ALLOW6,
};

const MASK: u64 = DNS_BYTES as u64 - 1;
const LABEL_MASK: u64 = DNS_MAX_LABELS as u64 - 1;
/// Answer records looked at.
const MAX_ANSWERS: u32 = 8;
/// Longest DNS name on the wire.
const MAX_NAME: u32 = 256;

#[inline(always)]
fn byte(s: &DnsScratch, at: u64) -> u64 {
    s.buf[(at & MASK) as usize] as u64
}

#[inline(always)]
fn be16(s: &DnsScratch, at: u64) -> u64 {
    (byte(s, at) << 8) | byte(s, at + 1)
}

/// Leaves a DNS answer of an enforced agent for `syscall_dns_answer`; true when there is one
/// (the caller then tail-calls it).
#[inline(always)]
pub fn stash(agent: u64, data: u64, len: u64) -> bool {
    // SAFETY: the value is only tested for presence.
    if unsafe { EGRESS_AGENTS.get(&agent) }.is_none() {
        return false;
    }
    let Some(scratch) = DNS_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
    unsafe {
        (*scratch).agent = agent;
        (*scratch).data = data;
        (*scratch).len = len;
    }
    true
}

/// Tail-called by `syscall_sys_exit` for a DNS answer an enforced agent received; never
/// attached by itself.
#[btf_tracepoint(function = "sys_exit")]
pub fn syscall_dns_answer(_ctx: BtfTracePointContext) -> i32 {
    let _ = learn();
    0
}

/// What the bpf_loop steps get: the scratch map value.
#[repr(C)]
struct Step {
    s: *mut DnsScratch,
}

#[inline(always)]
fn run(steps: u32, callback: extern "C" fn(u64, *mut c_void) -> i64, s: *mut DnsScratch) {
    let mut step = Step { s };
    // SAFETY: the callbacks have bpf_loop's signature; `step` outlives the call.
    unsafe {
        bpf_loop(
            steps,
            callback as *mut c_void,
            (&mut step as *mut Step).cast(),
            0,
        );
    }
}

/// Learns the addresses of an allowed name from the stashed DNS answer.
#[inline(always)]
fn learn() -> Option<()> {
    let scratch = DNS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
    let s = unsafe { &mut *scratch };
    let n = if s.len > DNS_BYTES as u64 - 1 {
        DNS_BYTES as u64 - 1
    } else {
        s.len
    } & MASK;
    // SAFETY: `n` is below the buffer size; the helper checks the user address.
    if unsafe { bpf_probe_read_user(s.buf.as_mut_ptr().cast(), n as u32, s.data as *const _) } != 0
    {
        return None;
    }
    if n < 12 || byte(s, 2) & 0x80 == 0 || be16(s, 4) != 1 {
        return None;
    }
    s.n = n;
    s.answers = be16(s, 6);

    // The question's labels, forwards.
    let mut at = 12u64;
    let mut labels = 0u64;
    for i in 0..DNS_MAX_LABELS {
        let l = byte(s, at);
        if l == 0 {
            break;
        }
        if l & 0xc0 != 0 || at + 1 + l >= n {
            return None;
        }
        s.starts[i] = at;
        labels = i as u64 + 1;
        at += 1 + l;
    }
    if labels == 0 {
        return None;
    }
    // Every suffix's hash, in one backward pass (a length byte stands where a dot goes).
    s.cursor = at; // the name's terminating zero
    s.label = labels - 1;
    s.hash = 0;
    run(MAX_NAME, hash_step, scratch);

    // The longest allowed suffix decides: the name itself (exact) or one of its parents (`*.`).
    let mut found: Option<EgressPorts> = None;
    for k in 0..DNS_MAX_LABELS {
        if k as u64 >= labels {
            break;
        }
        let key = NameKey {
            agent_id: s.agent,
            hash: s.hashes[k],
        };
        // SAFETY: copied out at once.
        if let Some(rule) = unsafe { ALLOWED_NAMES.get(&key) } {
            let wanted = if k == 0 {
                name_flags::EXACT
            } else {
                name_flags::BELOW
            };
            if rule.flags & wanted != 0 {
                found = Some(*rule);
                break;
            }
        }
    }
    s.rule = found?;
    // The answers, after the question's zero byte, type and class.
    s.cursor = at + 5;
    run(MAX_ANSWERS, answer_step, scratch);
    Some(())
}

/// One byte of the backward pass; returns 1 when the first label's hash is recorded.
#[inline(never)]
extern "C" fn hash_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `Step` that `run` gave it.
    let s = unsafe { &mut *(*ctx.cast::<Step>()).s };
    if s.cursor <= 12 {
        return 1;
    }
    s.cursor -= 1;
    let pos = s.cursor;
    let label = s.label & LABEL_MASK;
    if pos == s.starts[label as usize] {
        s.hashes[label as usize] = s.hash;
        if label == 0 {
            return 1;
        }
        s.hash = name_hash_step(s.hash, b'.');
        s.label = label - 1;
    } else {
        s.hash = name_hash_step(s.hash, byte(s, pos) as u8);
    }
    0
}

/// One answer record: A and AAAA join the allowlist with the allowed name's ports.
#[inline(never)]
extern "C" fn answer_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `Step` that `run` gave it.
    let s = unsafe { &mut *(*ctx.cast::<Step>()).s };
    if index >= s.answers {
        return 1;
    }
    let mut at = s.cursor;
    if byte(s, at) & 0xc0 == 0xc0 {
        at += 2;
    } else {
        for _ in 0..DNS_MAX_LABELS {
            let l = byte(s, at);
            at += 1;
            if l == 0 {
                break;
            }
            at += l;
        }
    }
    if at + 10 > s.n {
        return 1;
    }
    let rtype = be16(s, at);
    let rdlen = be16(s, at + 8);
    let rdata = at + 10;
    if rdata + rdlen > s.n {
        return 1;
    }
    let agent = s.agent.to_be_bytes();
    if rtype == 1 && rdlen == 4 {
        let addr = [
            byte(s, rdata) as u8,
            byte(s, rdata + 1) as u8,
            byte(s, rdata + 2) as u8,
            byte(s, rdata + 3) as u8,
        ];
        let key = Key::new(64 + 32, EgressKey4 { agent, addr });
        let _ = EGRESS_ALLOW4.insert(&key, &s.rule, 0);
    } else if rtype == 28 && rdlen == 16 {
        let mut addr = [0u8; 16];
        for (i, b) in addr.iter_mut().enumerate() {
            *b = byte(s, rdata + i as u64) as u8;
        }
        let key = Key::new(64 + 128, EgressKey6 { agent, addr });
        let _ = EGRESS_ALLOW6.insert(&key, &s.rule, 0);
    }
    s.cursor = rdata + rdlen;
    0
}
