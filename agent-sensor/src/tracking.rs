//! Telling the kernel which processes and cgroups belong to which agent.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use agent_sensor_common::TrackedTask;
use thiserror::Error;

use crate::loader::{LoadError, LoadedSensor};

#[derive(Debug, Error)]
pub enum TrackError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no process {0} to track")]
    NoProcess(u32),
    #[error("{path} is not a cgroup v2 directory: {source}")]
    NotCgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot update the kernel's tracking map: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// cgroup v2 id of a cgroup directory: the inode number of the directory.
pub fn cgroup_id(path: &Path) -> Result<u64, TrackError> {
    let err = |source| TrackError::NotCgroup {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !path.join("cgroup.procs").exists() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no cgroup.procs",
        )));
    }
    Ok(meta.ino())
}

/// Tracks process `pid` (and, through the kernel, every descendant it creates from now on).
pub fn track_pid(sensor: &mut LoadedSensor, pid: u32, agent_id: u64) -> Result<(), TrackError> {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(TrackError::NoProcess(pid));
    }
    insert_task(&mut sensor.tracked_tasks()?, pid, agent_id)?;
    sensor.bump_tracking_generation()?;
    Ok(())
}

/// Makes `pid` a task of `agent_id`, keeping the flags the programs set on it if it was
/// tracked already (a process that owns counted sockets must go on reporting their closes).
fn insert_task<T>(
    tasks: &mut aya::maps::HashMap<T, u32, TrackedTask>,
    pid: u32,
    agent_id: u64,
) -> Result<(), aya::maps::MapError>
where
    T: std::borrow::BorrowMut<aya::maps::MapData>,
{
    let flags = tasks.get(&pid, 0).map_or(0, |task| task.flags);
    tasks.insert(pid, TrackedTask { agent_id, flags }, 0)
}

/// Stops tracking the cgroup at `path` (its tasks stay tracked until they exit).
pub fn untrack_cgroup(sensor: &mut LoadedSensor, path: &Path) -> Result<(), TrackError> {
    let id = cgroup_id(path)?;
    match sensor.tracked_cgroups()?.remove(&id) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Tracks every task in the cgroup at `path`: those there now and every one that enters it.
pub fn track_cgroup(
    sensor: &mut LoadedSensor,
    path: &Path,
    agent_id: u64,
) -> Result<u64, TrackError> {
    let id = cgroup_id(path)?;
    sensor
        .tracked_cgroups()?
        .insert(id, TrackedTask::new(agent_id), 0)?;
    // Tasks already inside entered before the map knew the cgroup.
    let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
    let mut tasks = sensor.tracked_tasks()?;
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        insert_task(&mut tasks, pid, agent_id)?;
    }
    sensor.bump_tracking_generation()?;
    Ok(id)
}
