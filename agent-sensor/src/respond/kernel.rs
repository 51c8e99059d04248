//! What the kernel enforces by itself: per-agent egress allowlists (cgroup sock_addr
//! programs, extended by DNS answers for allowed names in the kernel), files that kill on
//! access, executables that kill on exec. This module fills the maps those programs read.

use std::{net::IpAddr, os::unix::fs::MetadataExt, path::Path};

use agent_sensor_common::egress::{
    name_flags, name_hash, EgressKey4, EgressKey6, EgressPorts, NameKey, MAX_PORTS,
};
use aya::{
    maps::{lpm_trie::Key, HashMap, LpmTrie, MapData, MapError},
    Ebpf,
};
use thiserror::Error;

use crate::policy::AgentScope;

#[derive(Debug, Error)]
pub enum KernelPolicyError {
    #[error("the eBPF object has no map `{0}`")]
    MissingMap(&'static str),
    #[error("eBPF map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("{key}: {path}: {source}")]
    Stat {
        /// The policy key that lists the file, `enforcement.kill_on_access` say.
        key: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the policy allows more than {MAX_PORTS} egress ports; the kernel can enforce at most that many")]
    TooManyPorts,
}

fn map<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, KernelPolicyError> {
    ebpf.map_mut(name)
        .ok_or(KernelPolicyError::MissingMap(name))
}

fn err(map: &'static str) -> impl Fn(MapError) -> KernelPolicyError {
    move |source| KernelPolicyError::Map { map, source }
}

/// The kernel's device number (`major << 20 | minor`) from `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u64 {
    let major = (st_dev >> 8) & 0xfff;
    let minor = (st_dev & 0xff) | ((st_dev >> 12) & 0xfff00);
    (major << 20) | minor
}

/// Fills `map` (KILL_ON_ACCESS or FORBIDDEN_EXEC) with the device and inode of each path the
/// policy lists under `key`. A file that does not exist is an error, not skipped: enforcement
/// the policy asks for and the kernel would not do must not start as if it were in force.
pub fn fill_inode_list(
    ebpf: &mut Ebpf,
    map_name: &'static str,
    key: &'static str,
    paths: &[String],
) -> Result<usize, KernelPolicyError> {
    let mut list: HashMap<_, [u64; 2], u32> =
        HashMap::try_from(map(ebpf, map_name)?).map_err(err(map_name))?;
    for path in paths {
        let meta =
            std::fs::metadata(Path::new(path)).map_err(|source| KernelPolicyError::Stat {
                key,
                path: path.clone(),
                source,
            })?;
        list.insert([kernel_dev(meta.dev()), meta.ino()], 1, 0)
            .map_err(err(map_name))?;
    }
    Ok(paths.len())
}

fn ports(scope: &AgentScope) -> Result<EgressPorts, KernelPolicyError> {
    let mut value = EgressPorts::default();
    if let Some(allowed) = scope.egress().ports() {
        if allowed.len() > MAX_PORTS {
            return Err(KernelPolicyError::TooManyPorts);
        }
        for (slot, port) in value.ports.iter_mut().zip(allowed) {
            *slot = *port;
        }
        value.count = allowed.len() as u16;
    }
    Ok(value)
}

/// Puts agent `id` under in-kernel egress enforcement with the allowlist of `scope`.
pub fn enforce_egress(
    ebpf: &mut Ebpf,
    id: u64,
    scope: &AgentScope,
) -> Result<(), KernelPolicyError> {
    let ports = ports(scope)?;
    {
        let mut names: HashMap<_, NameKey, EgressPorts> =
            HashMap::try_from(map(ebpf, "ALLOWED_NAMES")?).map_err(err("ALLOWED_NAMES"))?;
        let egress = scope.egress();
        let named = egress
            .exact_names()
            .map(|n| (n, name_flags::EXACT))
            .chain(egress.below_domains().map(|n| (n, name_flags::BELOW)));
        for (name, flag) in named {
            let key = NameKey {
                agent_id: id,
                hash: name_hash(name),
            };
            // A name can be both exact and a `*.` parent: keep both flags.
            let flags = names.get(&key, 0).map(|v| v.flags).unwrap_or(0) | flag;
            names
                .insert(key, EgressPorts { flags, ..ports }, 0)
                .map_err(err("ALLOWED_NAMES"))?;
        }
    }
    for cidr in scope.egress().cidrs() {
        allow_cidr(ebpf, id, cidr.addr(), cidr.prefix_len(), ports)?;
    }
    let mut agents: HashMap<_, u64, u32> =
        HashMap::try_from(map(ebpf, "EGRESS_AGENTS")?).map_err(err("EGRESS_AGENTS"))?;
    agents.insert(id, 1, 0).map_err(err("EGRESS_AGENTS"))
}

fn allow_cidr(
    ebpf: &mut Ebpf,
    id: u64,
    addr: IpAddr,
    prefix: u8,
    ports: EgressPorts,
) -> Result<(), KernelPolicyError> {
    let agent = id.to_be_bytes();
    match addr.to_canonical() {
        IpAddr::V4(v4) => {
            let mut trie: LpmTrie<_, EgressKey4, EgressPorts> =
                LpmTrie::try_from(map(ebpf, "EGRESS_ALLOW4")?).map_err(err("EGRESS_ALLOW4"))?;
            let key = Key::new(
                64 + prefix.min(32) as u32,
                EgressKey4 {
                    agent,
                    addr: v4.octets(),
                },
            );
            trie.insert(&key, ports, 0).map_err(err("EGRESS_ALLOW4"))
        }
        IpAddr::V6(v6) => {
            let mut trie: LpmTrie<_, EgressKey6, EgressPorts> =
                LpmTrie::try_from(map(ebpf, "EGRESS_ALLOW6")?).map_err(err("EGRESS_ALLOW6"))?;
            let key = Key::new(
                64 + prefix.min(128) as u32,
                EgressKey6 {
                    agent,
                    addr: v6.octets(),
                },
            );
            trie.insert(&key, ports, 0).map_err(err("EGRESS_ALLOW6"))
        }
    }
}

/// Takes agent `id` out of egress enforcement and forgets its allowlist entries.
pub fn release_egress(ebpf: &mut Ebpf, id: u64) -> Result<(), KernelPolicyError> {
    let agent = id.to_be_bytes();
    {
        let mut agents: HashMap<_, u64, u32> =
            HashMap::try_from(map(ebpf, "EGRESS_AGENTS")?).map_err(err("EGRESS_AGENTS"))?;
        let _ = agents.remove(&id);
    }
    {
        let mut names: HashMap<_, NameKey, EgressPorts> =
            HashMap::try_from(map(ebpf, "ALLOWED_NAMES")?).map_err(err("ALLOWED_NAMES"))?;
        let keys: Vec<NameKey> = names
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.agent_id == id)
            .collect();
        for key in keys {
            let _ = names.remove(&key);
        }
    }
    remove_prefixes(ebpf, "EGRESS_ALLOW4", |k: &EgressKey4| k.agent == agent)?;
    remove_prefixes(ebpf, "EGRESS_ALLOW6", |k: &EgressKey6| k.agent == agent)
}

/// Removes the prefixes of the LPM trie `name` whose key data `matches`.
fn remove_prefixes<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    matches: impl Fn(&K) -> bool,
) -> Result<(), KernelPolicyError> {
    let mut trie: LpmTrie<&mut MapData, K, EgressPorts> =
        LpmTrie::try_from(map(ebpf, name)?).map_err(err(name))?;
    let keys: Vec<Key<K>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| matches(&k.data()))
        .collect();
    for key in keys {
        let _ = trie.remove(&key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip_with_the_events_encoding() {
        for (major, minor) in [(254u64, 0u64), (8, 1), (8, 300), (259, 70000)] {
            let kernel = (major << 20) | minor;
            assert_eq!(
                kernel_dev(crate::events::user_dev(kernel)),
                kernel,
                "{major}:{minor}"
            );
        }
    }
}
