//! How the run loop goes to sleep on the ring without making every record pay for a wake-up.
//!
//! The programs commit records without waking the daemon; the first record committed while
//! the reader flag is up wakes it and lowers the flag (`emit::wake_reader` in the eBPF crate).
//! A wake-up costs the task that writes the record about 2 µs on a VM (an inter-processor
//! interrupt), more than the rest of the record, so the loop raises the flag only when it is
//! about to sleep. When records come as a stream (several per look, or a wake-up soon after
//! the last sleep) it first lingers a quarter of a millisecond and looks again: while the
//! stream lasts nobody pays for wake-ups and the daemon handles several records per look, and
//! a record waits at most one linger longer. A lone record (idle agent) still wakes the daemon
//! at once.
//!
//! Each look costs the daemon a sleep and a wake of its own (a few µs), so a thin stream that
//! lasts (10,000 records/s for more than `SUSTAINED`: two or three per look) lingers longer, up
//! to a millisecond, until a look finds a dozen or so records; a thick one goes back to a
//! quarter of a millisecond, and so does every new stream. A burst (an agent starting, a
//! command) never lingers longer: what it carries keeps the quarter-millisecond latency.
//!
//! A stream ends when the ring stays quiet for a millisecond after the loop went to sleep
//! (see `Pace`); a look that finds nothing only sends the loop to sleep until the next record.

use std::time::{Duration, Instant};

use super::{DaemonError, BATCH};
use crate::{
    loader::{ring::EventRing, ReaderFlag},
    pipeline::Pipeline,
};

/// Records one look must find to count as a stream on its own.
const STREAM: u64 = 4;
/// A wake-up this soon after the loop went to sleep means records keep coming: a stream too.
const BUSY: Duration = Duration::from_millis(1);
/// How long the loop waits for more of a stream before it raises the flag: the latency a
/// record may gain while records keep coming (a lone record still wakes the loop at once).
/// Shorter for a small ring (see `linger_for`).
const LINGER: Duration = Duration::from_micros(250);
/// The longest linger a thin stream grows to: the latency a record may gain then.
const MAX_LINGER: Duration = Duration::from_millis(1);
/// Records a look should find: fewer than half as many and the next linger doubles (up to
/// `MAX_LINGER`), more than twice as many and it halves (down to the ring's linger).
const LOOK_RECORDS: u64 = 16;
/// How long a stream must have lasted before its lingers grow.
const SUSTAINED: Duration = Duration::from_millis(20);
/// A linger fills at most a quarter of the ring at this rate, about what two tracked loops
/// write on the benchmark machine; below `MIN_LINGER` the loop does not linger at all.
const FILL_BYTES_PER_SECOND: f64 = 256e6;
const MIN_LINGER: Duration = Duration::from_micros(20);
/// Lingering in a row before the loop lets signals and requests in.
const LINGER_BUDGET: Duration = Duration::from_millis(2);
/// Rounds of raising the flag and looking again before the loop lets other work in.
const SETTLE_ROUNDS: usize = 8;
/// How long the once-a-second safety net may drain.
const CATCH_UP_TIME: Duration = Duration::from_millis(20);

pub struct RingWait {
    flag: ReaderFlag,
    pace: Pace,
}

impl RingWait {
    /// Raises the flag: records committed from now on wake the loop until it drains.
    pub fn new(mut flag: ReaderFlag, ring_bytes: u32) -> Result<Self, DaemonError> {
        flag.set_waiting()?;
        // A linger is a quarter of a millisecond: the default 50 µs timer slack would stretch
        // it by a fifth.
        // SAFETY: prctl on the calling thread (the run loop's) only.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000, 0, 0, 0) };
        Ok(Self {
            flag,
            pace: Pace::new(linger_for(ring_bytes)),
        })
    }

    /// Call after a drain that emptied the ring, with the records it handled. Returns
    /// whether the ring may hold more (the loop must not sleep yet).
    pub fn settle(
        &mut self,
        pipeline: &mut Pipeline,
        ring: &mut EventRing,
        handled: u64,
    ) -> Result<bool, DaemonError> {
        if self.pace.woke(Instant::now(), handled) && self.linger_a_while(pipeline, ring)? {
            return Ok(true);
        }
        for _ in 0..SETTLE_ROUNDS {
            self.flag.set_waiting()?;
            // Records committed before the programs could see the flag carried no wake-up.
            if drain(pipeline, ring)? {
                return Ok(true);
            }
            // A record that took the wake-up while that look drained it left a wake-up that
            // will find nothing to read, and the flag down: raise it and look again.
            if self.flag.is_waiting()? {
                self.pace.sleeps(Instant::now());
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The once-a-second safety net: drains what no wake-up announced (the one record that
    /// would have carried it did not fit a full ring) and leaves the flag up. Draining outside
    /// the ring's readiness matters: a record whose wake-up is still on its way has lowered
    /// the flag, and once its record is drained here that wake-up finds nothing to read, so
    /// the flag must be raised again, or no record would wake the loop any more.
    pub fn catch_up(
        &mut self,
        pipeline: &mut Pipeline,
        ring: &mut EventRing,
    ) -> Result<(), DaemonError> {
        let deadline = Instant::now() + CATCH_UP_TIME;
        loop {
            let before = pipeline.stats.events;
            let more = drain(pipeline, ring)?
                || self.settle(pipeline, ring, pipeline.stats.events - before)?;
            if !more {
                return Ok(());
            }
            if Instant::now() > deadline {
                // What is left waits for the next record's wake-up or the next tick.
                self.flag.set_waiting()?;
                return Ok(());
            }
        }
    }

    /// Sleeps a linger and drains, while each look finds records. Returns true when the loop
    /// should come straight back instead of sleeping (a full batch waited, or the stream
    /// lasted `LINGER_BUDGET`).
    fn linger_a_while(
        &mut self,
        pipeline: &mut Pipeline,
        ring: &mut EventRing,
    ) -> Result<bool, DaemonError> {
        let until = Instant::now() + LINGER_BUDGET;
        loop {
            std::thread::sleep(self.pace.linger_now);
            let before = pipeline.stats.events;
            if drain(pipeline, ring)? {
                return Ok(true);
            }
            let found = pipeline.stats.events - before;
            if found == 0 {
                return Ok(false);
            }
            let now = Instant::now();
            self.pace.looked(now, found);
            if now >= until {
                return Ok(true);
            }
        }
    }
}

/// Whether records come as a stream, and how long the loop lingers for the next look.
///
/// A stream ends when the ring stays quiet for `BUSY` after the loop went to sleep, not at
/// the first look that finds nothing: records from many processes arrive at random, and at
/// 10,000 a second one quarter-millisecond look in twelve finds none. Ending the stream there
/// restarted it at the shortest linger, so a thin stream from many agents never lasted the
/// `SUSTAINED` it takes to grow its linger, and the loop looked four times as often as for
/// the same rate from one steady process (the benchmark's scaling rows: daemon CPU per event
/// doubled from one agent to ten).
#[derive(Debug)]
struct Pace {
    /// The shortest and longest linger; `None`: the ring is too small to wait on.
    linger: Option<(Duration, Duration)>,
    /// The linger now, between the two.
    linger_now: Duration,
    /// When the stream in progress began.
    stream_since: Option<Instant>,
    /// When the loop last went to sleep on the ring, until the wake-up after that.
    slept_at: Option<Instant>,
}

impl Pace {
    fn new(linger: Option<(Duration, Duration)>) -> Self {
        Self {
            linger,
            linger_now: linger.map_or(LINGER, |(shortest, _)| shortest),
            stream_since: None,
            slept_at: None,
        }
    }

    /// The loop drained `handled` records at `now`, the first look since it woke or since it
    /// last came back to let other work in. Returns whether to linger for more.
    fn woke(&mut self, now: Instant, handled: u64) -> bool {
        let Some((shortest, _)) = self.linger else {
            return false;
        };
        let woke_soon = match self.slept_at.take() {
            Some(slept_at) if now.saturating_duration_since(slept_at) < BUSY => true,
            Some(_) => {
                // The stream is over: the next one starts with the shortest linger, so that
                // a linger grown for a thin stream does not delay the next burst.
                self.linger_now = shortest;
                self.stream_since = None;
                false
            }
            None => false,
        };
        // A stream whose lingering stopped only to let other work in (`LINGER_BUDGET`), or
        // whose last look found nothing, goes on however little this look found.
        if handled >= STREAM || woke_soon || self.stream_since.is_some() {
            self.stream_since.get_or_insert(now);
            true
        } else {
            false
        }
    }

    /// A look while lingering found `found` records.
    fn looked(&mut self, now: Instant, found: u64) {
        let (Some((shortest, longest)), Some(since)) = (self.linger, self.stream_since) else {
            return;
        };
        let cap = linger_cap(now.saturating_duration_since(since), shortest, longest);
        self.linger_now = next_linger(self.linger_now, found, shortest, cap);
    }

    /// The loop goes to sleep until a record wakes it.
    fn sleeps(&mut self, now: Instant) {
        self.slept_at = Some(now);
    }
}

/// How long a linger may grow in a stream that has lasted `age`: a burst keeps the shortest.
fn linger_cap(age: Duration, shortest: Duration, longest: Duration) -> Duration {
    if age >= SUSTAINED {
        longest
    } else {
        shortest
    }
}

/// The linger after a look that found `found` records: longer for a thin stream, shorter for
/// a thick one.
fn next_linger(now: Duration, found: u64, shortest: Duration, longest: Duration) -> Duration {
    if found < LOOK_RECORDS / 2 {
        (now * 2).min(longest)
    } else if found > LOOK_RECORDS * 2 {
        (now / 2).max(shortest)
    } else {
        now
    }
}

/// The shortest and longest linger for a ring of `ring_bytes`: records must not overflow it
/// meanwhile, even if a thin stream turns into a flood during the longest.
fn linger_for(ring_bytes: u32) -> Option<(Duration, Duration)> {
    let quarter_fill = Duration::from_secs_f64(ring_bytes as f64 / 4.0 / FILL_BYTES_PER_SECOND);
    let shortest = quarter_fill.min(LINGER);
    (shortest >= MIN_LINGER).then_some((shortest, quarter_fill.min(MAX_LINGER)))
}

fn drain(pipeline: &mut Pipeline, ring: &mut EventRing) -> Result<bool, DaemonError> {
    pipeline
        .drain(ring, BATCH)
        .map_err(DaemonError::EventsWrite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_rings_linger_less_or_not_at_all() {
        // The default 8 MiB ring: the full quarter millisecond, up to a millisecond.
        assert_eq!(linger_for(8 << 20), Some((LINGER, MAX_LINGER)));
        // 64 KiB fill in a quarter of 256 µs at the assumed rate: that long, never longer.
        let (shortest, longest) = linger_for(64 << 10).unwrap();
        assert!(shortest > MIN_LINGER && shortest < LINGER, "{shortest:?}");
        assert_eq!(shortest, longest);
        // A 4 KiB ring fills in microseconds: records wake the loop one by one.
        assert_eq!(linger_for(4096), None);
    }

    #[test]
    fn a_burst_keeps_the_shortest_linger_however_thin() {
        let (shortest, longest) = linger_for(8 << 20).unwrap();
        let cap = linger_cap(Duration::from_millis(5), shortest, longest);
        assert_eq!(next_linger(shortest, 1, shortest, cap), shortest);
        let cap = linger_cap(SUSTAINED, shortest, longest);
        assert_eq!(next_linger(shortest, 1, shortest, cap), shortest * 2);
    }

    /// A stream of `STREAM` records a look from `start`, looked at every shortest linger
    /// for `length`; returns when it ended.
    fn stream(pace: &mut Pace, start: Instant, length: Duration) -> Instant {
        assert!(pace.woke(start, STREAM));
        let mut now = start;
        while now < start + length {
            now += pace.linger_now;
            pace.looked(now, 2);
        }
        now
    }

    #[test]
    fn a_thin_stream_goes_on_through_a_look_that_finds_nothing() {
        let (shortest, longest) = linger_for(8 << 20).unwrap();
        let mut pace = Pace::new(Some((shortest, longest)));
        let mut now = stream(&mut pace, Instant::now(), SUSTAINED + shortest);
        assert!(pace.linger_now > shortest, "{:?}", pace.linger_now);
        // A look found nothing: the loop sleeps, and a record wakes it soon after.
        pace.sleeps(now);
        now += Duration::from_micros(300);
        assert!(
            pace.woke(now, 1),
            "a lone record this soon is still the stream"
        );
        pace.looked(now + pace.linger_now, 2);
        assert_eq!(
            pace.linger_now, longest,
            "the stream's linger went on growing"
        );
    }

    #[test]
    fn a_quiet_millisecond_ends_a_stream() {
        let (shortest, longest) = linger_for(8 << 20).unwrap();
        let mut pace = Pace::new(Some((shortest, longest)));
        let mut now = stream(&mut pace, Instant::now(), SUSTAINED * 2);
        assert_eq!(pace.linger_now, longest);
        pace.sleeps(now);
        now += BUSY;
        // A lone record after that is no stream: the loop drains it and sleeps again.
        assert!(!pace.woke(now, 1));
        assert_eq!(pace.linger_now, shortest);
        // The next burst lingers the shortest, however thin, until it has lasted.
        pace.sleeps(now);
        now += BUSY * 2;
        assert!(pace.woke(now, STREAM));
        pace.looked(now + shortest, 1);
        assert_eq!(pace.linger_now, shortest);
    }

    #[test]
    fn a_ring_too_small_to_wait_on_never_lingers() {
        let mut pace = Pace::new(linger_for(4096));
        assert!(!pace.woke(Instant::now(), 1_000));
    }

    #[test]
    fn a_thin_stream_lingers_longer_and_a_thick_one_shorter() {
        let (shortest, longest) = linger_for(8 << 20).unwrap();
        let mut now = shortest;
        // Two records a look: doubling up to a millisecond, no further.
        for expected in [500, 1000, 1000] {
            now = next_linger(now, 2, shortest, longest);
            assert_eq!(now, Duration::from_micros(expected));
        }
        // About the right number: stays.
        assert_eq!(next_linger(now, LOOK_RECORDS, shortest, longest), now);
        // Floods: back down to the ring's linger, not below.
        now = next_linger(now, 100, shortest, longest);
        assert_eq!(now, Duration::from_micros(500));
        now = next_linger(now, 100, shortest, longest);
        now = next_linger(now, 100, shortest, longest);
        assert_eq!(now, LINGER);
    }
}
