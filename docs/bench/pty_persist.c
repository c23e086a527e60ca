/* pty_persist.c: what persisting a PTY reader's output costs the reader on this VM
 * (docs/performance.md, session 6). A child writes N MB of zeros into a raw PTY; the main thread
 * reads it the way corral's bulk pump does (non-blocking reads; on EAGAIN poll(2) of the PTY and
 * a 2 ms periodic timerfd) into a 1 MiB ring. A writer thread is woken (only when it sleeps, and
 * once THRESH bytes are new: corral's persister takes ~150 KB per turn in a flood) and copies
 * what is new out of the ring; depending on the mode:
 *   mode 0  no writer thread at all (the plain loop)
 *   mode 1  the writer only copies (no write(2))
 *   mode 2  the writer appends to 4 MiB segment files, deleting the oldest beyond 64 MiB (as
 *           corral's log does)
 *   mode 3  the writer pwrite(2)s over one 4 MiB file again and again (page cache pages reused)
 *   mode 4  like 2, but a segment past retention is renamed and overwritten, not deleted
 *   mode 5  like 2, with the writer at SCHED_IDLE
 *   mode 6  no writer thread: the reader appends to the segments itself (pwritev from the ring)
 *   mode 7  like 0, spinning up to $SPIN_US microseconds on EAGAIN before polling
 * It prints the rate and the CPU seconds per GB of the reader and the writer. Count remote
 * wakeups with the "CAL" (function call interrupts) line of /proc/interrupts around a run.
 * Build and run: gcc -O2 -pthread -o /tmp/pty_persist docs/bench/pty_persist.c -lutil &&
 *   for r in 1 2 3 4 5; do for m in 0 1 2 6; do grep CAL /proc/interrupts;
 *   /tmp/pty_persist $m 512 /tmp/ptyp 131072; done; done
 * Usage: pty_persist MODE MB [DIR [THRESH]]
 */
#define _GNU_SOURCE
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <errno.h>

#define RING (1 << 20)
#define SEG (4 << 20)
#define KEEP 16
static char ring[RING];
static _Atomic long head, persisted, lapped;
static long thresh = 1;
static _Atomic int done, sleeping;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int mode;
static const char *dir;
static long wakes;
static double writer_cpu;
static double cpu() { struct rusage u; getrusage(RUSAGE_THREAD, &u); return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6; }

static double now() { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void path(char *p, long n) { snprintf(p, 256, "%s/%08ld.seg", dir, n); }

static void *writer(void *arg) {
  (void)arg;
  if (mode == 5) { struct sched_param sp = {0}; sched_setscheduler(0, SCHED_IDLE, &sp); }
  static char buf[RING];
  long tail = 0, seg = 0, seglen = 0, oldest = 0;
  char p[256];
  int fd = -1;
  if (mode >= 2) { path(p, 0); fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0600); }
  if (mode == 3) { static char z[SEG]; pwrite(fd, z, SEG, 0); }
  for (;;) {
    long h = atomic_load(&head);
    if (h == tail) {
      if (atomic_load(&done)) break;
      pthread_mutex_lock(&mu);
      atomic_store(&sleeping, 1);
      while (atomic_load(&head) == tail && !atomic_load(&done)) pthread_cond_wait(&cv, &mu);
      atomic_store(&sleeping, 0);
      pthread_mutex_unlock(&mu);
      continue;
    }
    if (h - tail > RING) { atomic_fetch_add(&lapped, h - RING - tail); tail = h - RING; }
    long n = h - tail, s = tail % RING, first = n < RING - s ? n : RING - s;
    memcpy(buf, ring + s, first);
    memcpy(buf + first, ring, n - first);
    tail = h;
    atomic_store(&persisted, tail);
    if (mode == 1) continue;
    if (mode == 3) { long o = seglen % SEG, k = n < SEG - o ? n : SEG - o; pwrite(fd, buf, k, o); seglen += k; continue; }
    if (seglen + n > SEG) {
      close(fd); seg++; seglen = 0; path(p, seg);
      if (seg - oldest > KEEP) {
        char old[256]; path(old, oldest); oldest++;
        if (mode == 4) rename(old, p); else unlink(old);
      }
      fd = open(p, O_CREAT | O_WRONLY, 0600);
    }
    pwrite(fd, buf, n, seglen);
    seglen += n;
  }
  writer_cpu = cpu();
  if (fd >= 0) close(fd);
  for (long i = oldest; i <= seg; i++) { path(p, i); unlink(p); }
  return NULL;
}

/* Mode 6: the reader writes the ring's new bytes to the segments itself. */
static long iseg = 0, iseglen = 0, ioldest = 0;
static int ifd = -1;
static void inline_write(long h) {
  char p[256];
  if (ifd < 0) { path(p, 0); ifd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0600); }
  long tail = atomic_load(&persisted), n = h - tail, s = tail % RING, first = n < RING - s ? n : RING - s;
  if (iseglen + n > SEG) {
    close(ifd); iseg++; iseglen = 0; path(p, iseg);
    if (iseg - ioldest > KEEP) { char old[256]; path(old, ioldest); ioldest++; unlink(old); }
    ifd = open(p, O_CREAT | O_WRONLY, 0600);
  }
  struct iovec iov[2] = {{ring + s, first}, {ring, n - first}};
  pwritev(ifd, iov, 2, iseglen);
  iseglen += n;
  atomic_store(&persisted, h);
}

static void inline_cleanup(void) {
  char p[256];
  if (ifd >= 0) close(ifd);
  for (long i = ioldest; i <= iseg; i++) { path(p, i); unlink(p); }
}

int main(int argc, char **argv) {
  mode = atoi(argv[1]);
  long mb = atol(argv[2]);
  dir = argc > 3 ? argv[3] : "/tmp/ptyp";
  if (argc > 4) thresh = atol(argv[4]);
  mkdir(dir, 0700);
  int m; pid_t p = forkpty(&m, NULL, NULL, NULL);
  if (p == 0) {
    char cmd[256];
    snprintf(cmd, 256, "stty raw -echo; head -c1 >/dev/null; head -c %ld000000 /dev/zero", mb);
    execl("/bin/sh", "sh", "-c", cmd, NULL);
    _exit(1);
  }
  usleep(300000);
  fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
  pthread_t w;
  if (mode > 0 && mode != 6) pthread_create(&w, NULL, writer, NULL);
  int tf = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  struct itimerspec its = {{0, 2000000}, {0, 2000000}};
  timerfd_settime(tf, 0, &its, NULL);
  static char buf[65536];
  long tot = 0, reads = 0;
  double spin_until = 0, spin_us = getenv("SPIN_US") ? atof(getenv("SPIN_US")) : 0;
  double t = now();
  write(m, "g", 1);
  for (;;) {
    ssize_t n = read(m, buf, sizeof buf);
    if (n > 0) {
      long h = atomic_load(&head), s = h % RING, first = n < RING - s ? n : RING - s;
      memcpy(ring + s, buf, first);
      memcpy(ring, buf + first, n - first);
      atomic_store(&head, h + n);
      if (mode == 6 && h + n - atomic_load(&persisted) >= thresh) inline_write(h + n);
      if (mode > 0 && atomic_load(&sleeping) && h + n - atomic_load(&persisted) >= thresh) {
        pthread_mutex_lock(&mu); pthread_cond_signal(&cv); pthread_mutex_unlock(&mu); wakes++;
      }
      tot += n; reads++; spin_until = 0;
      continue;
    }
    if (n == 0) break;
    if (errno == EAGAIN) {
      if (mode == 7 && spin_until == 0) spin_until = now() + spin_us / 1e6;
      if (mode == 7 && now() < spin_until) continue;
      spin_until = 0;
      struct pollfd pf[2] = {{m, POLLIN, 0}, {tf, POLLIN, 0}};
      poll(pf, 2, -1);
      if (pf[1].revents) { unsigned long long x; read(tf, &x, 8); }
      continue;
    }
    if (errno == EINTR) continue;
    break;
  }
  double d = now() - t, reader_cpu = cpu();
  waitpid(p, NULL, 0);
  if (mode == 6) inline_cleanup();
  atomic_store(&done, 1);
  if (mode > 0 && mode != 6) { pthread_mutex_lock(&mu); pthread_cond_signal(&cv); pthread_mutex_unlock(&mu); pthread_join(w, NULL); }
  printf("mode %d: %.0f MB/s, %ld B/read, writer wakes %ld, lapped %ld B, CPU s/GB reader %.2f writer %.2f\n", mode,
         tot / d / 1e6, tot / (reads ? reads : 1), wakes, atomic_load(&lapped), reader_cpu / tot * 1e9,
         writer_cpu / tot * 1e9);
}
