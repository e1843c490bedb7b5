/*
 * An LD_PRELOAD shim for tests that run ktctl under Debian's libfaketime (a laptop whose clock is off by an hour).
 *
 * libfaketime 0.9.10 rewrites every absolute timerfd_settime() by its offset, whatever the timer's clock. With
 * FAKETIME_DONT_FAKE_MONOTONIC=1 (only the wall clock is faked, as on a laptop whose clock is wrong) that turns
 * libdispatch's CLOCK_MONOTONIC / CLOCK_BOOTTIME deadlines negative (EINVAL), and without it they land decades
 * ahead: Swift's Task.sleep and every Dispatch timer never fire. Loaded before libfaketime, this passes
 * timerfd_settime() straight to the kernel; clock_gettime(CLOCK_REALTIME), time() and gettimeofday() stay faked.
 *
 * Built by `make deps` into .build/tools/faketime-timerfd.so. Used as the tests use it: the `faketime` wrapper (it sets
 * up libfaketime's shared state; preloading libfaketime alone lost a Swift program's arguments), then
 *   sh -c 'LD_PRELOAD="<this .so> $LD_PRELOAD" FAKETIME_DONT_FAKE_MONOTONIC=1 exec "$@"' sh ktctl ...
 */
#define _GNU_SOURCE
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

int timerfd_settime(int fd, int flags, const struct itimerspec *value, struct itimerspec *old) {
    return (int)syscall(SYS_timerfd_settime, fd, flags, value, old);
}
