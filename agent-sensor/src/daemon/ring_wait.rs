//! How the run loop goes to sleep on the ring without making every record pay for a wake-up.
//!
//! The programs commit records without waking the daemon; the first record committed while
//! the reader flag is up wakes it and lowers the flag (`emit::wake_reader` in the eBPF crate).
//! A wake-up costs the task that writes the record several µs on a VM (a self-IPI), more than
//! the rest of the record, so the loop raises the flag only when it is about to sleep. When
//! records come as a stream (several per look, or a wake-up soon after the last sleep) it
//! first lingers a while and looks again: while the stream lasts nobody pays for wake-ups and
//! the daemon handles several records per look, and a record waits at most one linger longer.
//! A lone record (idle agent) still wakes the daemon at once.
//!
//! Each look costs the daemon a sleep and a wake of its own, and each wake-up costs the task
//! whose record carries it an interrupt: on the benchmark VM the two came to over half of what
//! the sensor cost a coding session, whose records come in bursts a few milliseconds apart.
//! So a thin stream that lasts (10,000 records/s for more than `SUSTAINED`: two or three per
//! look) lingers longer, up to the longest linger, until a look finds a dozen or so records;
//! a thick one goes back to the shortest, and so does every new stream. A burst (an agent
//! starting, a command) never lingers longer than the shortest.
//!
//! How long a record may wait is the run's `max_delay`, the longest linger (a quarter of it is
//! the shortest): a millisecond in enforce mode, where an agent runs on until its record is
//! read and a freeze waits on that, and four in monitor mode, where only an alert's latency is
//! at stake (over coding sessions on the benchmark VM: a quarter of the wake-ups, and half the
//! sensor's eBPF and daemon CPU, of a millisecond's).
//! A stream ends when the ring stays quiet for twice that after the loop went to sleep (see
//! `Pace`); a look that finds nothing only sends the loop to sleep until the next record.

use std::time::{Duration, Instant};

use super::{DaemonError, BATCH};
use crate::{
    loader::{ring::EventRing, ReaderFlag},
    pipeline::Pipeline,
    policy::Mode,
};

/// Records one look must find to count as a stream on its own.
const STREAM: u64 = 4;
/// The longest a record waits while records keep coming, by default, in enforce mode: the
/// freeze of an agent waits on its record.
pub const ENFORCE_MAX_DELAY: Duration = Duration::from_millis(1);
/// The same in monitor mode, where only alerts wait.
pub const MONITOR_MAX_DELAY: Duration = Duration::from_millis(4);
/// Records a look should find: fewer than half as many and the next linger doubles (up to
/// the longest), more than twice as many and it halves (down to the shortest).
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
    ring_bytes: u32,
}

impl RingWait {
    /// Raises the flag: records committed from now on wake the loop until it drains.
    pub fn new(
        mut flag: ReaderFlag,
        ring_bytes: u32,
        max_delay: Duration,
    ) -> Result<Self, DaemonError> {
        flag.set_waiting()?;
        // A linger may be a quarter of a millisecond: the default 50 µs timer slack would
        // stretch it by a fifth.
        // SAFETY: prctl on the calling thread (the run loop's) only.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000, 0, 0, 0) };
        Ok(Self {
            flag,
            pace: Pace::new(Lingers::for_ring(ring_bytes, max_delay)),
            ring_bytes,
        })
    }

    /// The longest a record may wait from now on (a reloaded policy changed the mode).
    pub fn set_max_delay(&mut self, max_delay: Duration) {
        self.pace = Pace::new(Lingers::for_ring(self.ring_bytes, max_delay));
    }

    /// How long a record may wait, as the log says it: what was asked for, cut to what the
    /// ring holds.
    pub fn describe(&self) -> String {
        describe(self.pace.linger)
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
/// A stream ends when the ring stays quiet for `Lingers::busy()` after the loop went to sleep,
/// not at the first look that finds nothing: records from many processes arrive at random, and
/// at 10,000 a second one quarter-millisecond look in twelve finds none. Ending the stream there
/// restarted it at the shortest linger, so a thin stream from many agents never lasted the
/// `SUSTAINED` it takes to grow its linger, and the loop looked four times as often as for
/// the same rate from one steady process (the benchmark's scaling rows: daemon CPU per event
/// doubled from one agent to ten).
#[derive(Debug)]
struct Pace {
    /// `None`: the ring is too small to wait on, or the run asked for no delay.
    linger: Option<Lingers>,
    /// The linger now, between the two.
    linger_now: Duration,
    /// When the stream in progress began.
    stream_since: Option<Instant>,
    /// When the loop last went to sleep on the ring, until the wake-up after that.
    slept_at: Option<Instant>,
}

impl Pace {
    fn new(linger: Option<Lingers>) -> Self {
        Self {
            linger,
            linger_now: linger.map_or(Duration::ZERO, |l| l.shortest),
            stream_since: None,
            slept_at: None,
        }
    }

    /// The loop drained `handled` records at `now`, the first look since it woke or since it
    /// last came back to let other work in. Returns whether to linger for more.
    fn woke(&mut self, now: Instant, handled: u64) -> bool {
        let Some(linger) = self.linger else {
            return false;
        };
        let woke_soon = match self.slept_at.take() {
            Some(slept_at) if now.saturating_duration_since(slept_at) < linger.busy() => true,
            Some(_) => {
                // The stream is over: the next one starts with the shortest linger, so that
                // a linger grown for a thin stream does not delay the next burst.
                self.linger_now = linger.shortest;
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
        let (Some(linger), Some(since)) = (self.linger, self.stream_since) else {
            return;
        };
        let cap = linger_cap(
            now.saturating_duration_since(since),
            linger.shortest,
            linger.longest,
        );
        self.linger_now = next_linger(self.linger_now, found, linger.shortest, cap);
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

/// How long the loop lingers for more of a stream.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Lingers {
    /// The first linger of every stream, and a burst's only one.
    shortest: Duration,
    /// What a thin stream that lasts grows to: the longest a record waits.
    longest: Duration,
}

impl Lingers {
    /// The lingers for a ring of `ring_bytes` and a run that lets a record wait up to
    /// `max_delay`: records must not overflow the ring meanwhile, even if a thin stream turns
    /// into a flood during the longest.
    fn for_ring(ring_bytes: u32, max_delay: Duration) -> Option<Self> {
        let quarter_fill = Duration::from_secs_f64(ring_bytes as f64 / 4.0 / FILL_BYTES_PER_SECOND);
        let longest = quarter_fill.min(max_delay);
        let shortest = quarter_fill.min(max_delay / 4);
        (shortest >= MIN_LINGER).then_some(Self { shortest, longest })
    }

    /// A wake-up this soon after the loop went to sleep means records keep coming: the stream
    /// goes on.
    fn busy(&self) -> Duration {
        self.longest * 2
    }
}

fn describe(lingers: Option<Lingers>) -> String {
    match lingers {
        Some(linger) => format!(
            "records read at most {} µs late",
            linger.longest.as_micros()
        ),
        None => "every record wakes the reader".into(),
    }
}

/// The longest a record waits while records keep coming when the run does not say.
pub fn default_max_delay(mode: Mode) -> Duration {
    match mode {
        Mode::Enforce => ENFORCE_MAX_DELAY,
        Mode::Monitor => MONITOR_MAX_DELAY,
    }
}

fn drain(pipeline: &mut Pipeline, ring: &mut EventRing) -> Result<bool, DaemonError> {
    pipeline
        .drain(ring, BATCH)
        .map_err(DaemonError::EventsWrite)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default 8 MiB ring in enforce mode.
    fn enforce_lingers() -> Lingers {
        Lingers::for_ring(8 << 20, ENFORCE_MAX_DELAY).unwrap()
    }

    #[test]
    fn small_rings_linger_less_or_not_at_all() {
        // The default 8 MiB ring: a quarter of the delay asked for, up to all of it.
        let ms = Duration::from_millis;
        for (delay, shortest) in [(ms(1), Duration::from_micros(250)), (ms(4), ms(1))] {
            let lingers = Lingers::for_ring(8 << 20, delay).unwrap();
            assert_eq!(
                lingers,
                Lingers {
                    shortest,
                    longest: delay,
                }
            );
            assert_eq!(lingers.busy(), delay * 2);
        }
        // 64 KiB fill in a quarter of 256 µs at the assumed rate: that long, never longer.
        let small = Lingers::for_ring(64 << 10, MONITOR_MAX_DELAY).unwrap();
        assert!(
            small.shortest > MIN_LINGER && small.shortest < ms(1),
            "{small:?}"
        );
        assert_eq!(small.shortest, small.longest);
        // A 4 KiB ring fills in microseconds: records wake the loop one by one.
        assert_eq!(Lingers::for_ring(4096, MONITOR_MAX_DELAY), None);
        // So does a run that asks for no delay.
        assert_eq!(Lingers::for_ring(8 << 20, Duration::ZERO), None);
    }

    #[test]
    fn monitor_mode_lets_records_wait_longer_than_enforce_mode() {
        let monitor = Lingers::for_ring(8 << 20, default_max_delay(Mode::Monitor)).unwrap();
        let enforce = Lingers::for_ring(8 << 20, default_max_delay(Mode::Enforce)).unwrap();
        assert!(monitor.longest > enforce.longest && monitor.busy() > enforce.busy());
        // The most `--max-event-delay-us` allows, 100 ms, is cut to what the ring holds.
        let most = Duration::from_millis(100);
        let limit = Lingers::for_ring(8 << 20, most).unwrap();
        assert!(limit.longest < most / 10, "{limit:?}");
    }

    #[test]
    fn the_log_says_the_delay_in_force_not_the_one_asked_for() {
        let said = |ring, delay| describe(Lingers::for_ring(ring, delay));
        assert_eq!(
            said(8 << 20, MONITOR_MAX_DELAY),
            "records read at most 4000 µs late"
        );
        assert_eq!(
            said(64 << 10, MONITOR_MAX_DELAY),
            "records read at most 64 µs late"
        );
        assert_eq!(
            said(8 << 20, Duration::ZERO),
            "every record wakes the reader"
        );
    }

    #[test]
    fn a_burst_keeps_the_shortest_linger_however_thin() {
        let Lingers {
            shortest, longest, ..
        } = enforce_lingers();
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
        let Lingers {
            shortest, longest, ..
        } = enforce_lingers();
        let mut pace = Pace::new(Some(enforce_lingers()));
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
    fn a_quiet_spell_ends_a_stream() {
        let Lingers {
            shortest, longest, ..
        } = enforce_lingers();
        let mut pace = Pace::new(Some(enforce_lingers()));
        let mut now = stream(&mut pace, Instant::now(), SUSTAINED * 2);
        assert_eq!(pace.linger_now, longest);
        pace.sleeps(now);
        now += enforce_lingers().busy();
        // A lone record after that is no stream: the loop drains it and sleeps again.
        assert!(!pace.woke(now, 1));
        assert_eq!(pace.linger_now, shortest);
        // The next burst lingers the shortest, however thin, until it has lasted.
        pace.sleeps(now);
        now += enforce_lingers().busy() * 2;
        assert!(pace.woke(now, STREAM));
        pace.looked(now + shortest, 1);
        assert_eq!(pace.linger_now, shortest);
    }

    #[test]
    fn a_ring_too_small_to_wait_on_never_lingers() {
        let mut pace = Pace::new(Lingers::for_ring(4096, ENFORCE_MAX_DELAY));
        assert!(!pace.woke(Instant::now(), 1_000));
    }

    #[test]
    fn a_thin_stream_lingers_longer_and_a_thick_one_shorter() {
        let Lingers {
            shortest, longest, ..
        } = enforce_lingers();
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
        assert_eq!(now, shortest);
    }
}
