//! The serving thread's time slice, accounted between requests.
//!
//! Linux's scheduler (EEVDF) sees that a running thread has used up its time
//! slice only when it accounts that thread's run: at a timer tick (every 4 ms
//! at `HZ=250`, a common setting), or when a task is woken onto the same core.
//! A serving thread that always finds another request waiting can therefore
//! keep its core for a whole tick past its slice, while the backend or client
//! it has just woken waits for that core; where the proxy shares cores with its
//! backends or its clients, that wait is the latency tail.
//!
//! Reading the thread's own CPU clock (`CLOCK_THREAD_CPUTIME_ID`, a system call
//! even where the clock is in the vDSO) makes the kernel account the running
//! thread's time, and so reschedule it on the way back from that call if its
//! slice is spent: the core goes to the woken task within a request rather
//! than within a tick. [`account`] does that at most once per
//! [`INTERVAL`] of wall time on a thread; the check costs one read of the
//! monotonic clock per request, the system call 0.11 times per request at
//! 83,000 requests/s on two threads (`perf stat -e
//! syscalls:sys_enter_clock_gettime`). On other systems it does nothing.
//!
//! Measured on two cores shared by the proxy's two serving threads, the
//! upstream and the load generator: see `docs/benchmarks.md`, "Proxy beside
//! the others: runs and findings".

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The least wall time between two accountings on one thread: far below the
/// scheduler's slices (0.75 ms and up) and its tick (1–10 ms).
pub(crate) const INTERVAL: Duration = Duration::from_micros(100);

thread_local! {
    /// When this thread last had its run accounted.
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Has the kernel account the calling thread's run so far, when [`INTERVAL`]
/// has passed since it last did on this thread. Called once per request.
pub(crate) fn account() {
    let now = Instant::now();
    LAST.with(|last| {
        if due(last.get(), now) {
            last.set(Some(now));
            read_own_cpu_clock();
        }
    });
}

/// Whether an accounting last done at `last` is due again at `now`.
fn due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) >= INTERVAL)
}

/// The calling thread's CPU time; reading it accounts the thread's run.
#[cfg(target_os = "linux")]
fn read_own_cpu_clock() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(Duration::new(
        u64::try_from(t.tv_sec).ok()?,
        u32::try_from(t.tv_nsec).ok()?,
    ))
}

#[cfg(not(target_os = "linux"))]
fn read_own_cpu_clock() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accounting_is_due_once_per_interval() {
        let t0 = Instant::now();
        assert!(due(None, t0), "the first request of a thread");
        assert!(!due(Some(t0), t0));
        assert!(!due(Some(t0), t0 + INTERVAL - Duration::from_nanos(1)));
        assert!(due(Some(t0), t0 + INTERVAL));
        assert!(due(Some(t0), t0 + 3 * INTERVAL));
        // a clock read earlier than the last one (another core's) waits
        assert!(!due(Some(t0 + INTERVAL), t0));
    }

    /// The call reads the thread's own CPU time: it grows with work done on
    /// this thread and not with time spent asleep.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_clock_read_is_the_threads_own_cpu_time() {
        let before = read_own_cpu_clock().expect("a CPU time");
        std::thread::sleep(Duration::from_millis(50));
        let slept = read_own_cpu_clock().expect("a CPU time");
        assert!(
            slept - before < Duration::from_millis(25),
            "asleep for 50 ms, yet {:?} of CPU time",
            slept - before
        );
        // work until the clock shows 5 ms of it (however busy the machine)
        let spin = Instant::now();
        let mut x = 0u64;
        loop {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let worked = read_own_cpu_clock().expect("a CPU time");
            if worked - slept >= Duration::from_millis(5) {
                break;
            }
            assert!(
                spin.elapsed() < Duration::from_secs(60),
                "a minute of work, yet only {:?} of CPU time",
                worked - slept
            );
        }
    }

    /// Each thread keeps its own last accounting: another thread's first
    /// request accounts, whatever this one did.
    #[test]
    fn each_thread_accounts_on_its_first_request() {
        account();
        assert!(LAST.with(Cell::get).is_some(), "accounted");
        let other = std::thread::spawn(|| {
            let before = LAST.with(Cell::get);
            account();
            (before, LAST.with(Cell::get))
        })
        .join()
        .unwrap();
        assert_eq!(other.0, None, "a new thread has accounted nothing yet");
        assert!(other.1.is_some(), "its first request accounts");
    }
}
