/* Hostile programs for the sandbox's tests: one static binary, the attack named by argv[1].
 * Each prints one line "RESULT ..." on stdout that the test reads; each is bounded in count
 * and time so that running it WITHOUT the sandbox (to prove it works on this machine) is safe. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* fork N: forks up to N children that wait on a pipe; prints how many forks succeeded. */
static int fork_bomb(long n) {
    int p[2];
    if (pipe(p) != 0) return 2;
    long count = 0;
    int err = 0;
    for (long i = 0; i < n; i++) {
        pid_t c = fork();
        if (c < 0) { err = errno; break; }
        if (c == 0) {
            char b;
            close(p[1]);
            while (read(p[0], &b, 1) > 0) {}
            _exit(0);
        }
        count++;
    }
    printf("RESULT forks=%ld errno=%d\n", count, err);
    fflush(stdout);
    close(p[1]);
    while (wait(NULL) > 0) {}
    return 0;
}

/* hold N: up to N children that wait for ever, and itself (until killed). */
static int hold(long n) {
    long count = 0;
    int err = 0;
    for (long i = 0; i < n; i++) {
        pid_t c = fork();
        if (c < 0) { err = errno; break; }
        if (c == 0) { for (;;) pause(); }
        count++;
    }
    printf("RESULT held=%ld errno=%d\n", count, err);
    fflush(stdout);
    for (;;) pause();
}

/* fds N: opens /dev/null up to N times. */
static int fds(long n) {
    long count = 0;
    int err = 0;
    for (long i = 0; i < n; i++) {
        if (open("/dev/null", O_RDONLY) < 0) { err = errno; break; }
        count++;
    }
    printf("RESULT fds=%ld errno=%d\n", count, err);
    return 0;
}

/* mem MiB: allocates and touches up to MiB mebibytes. */
static int mem(long mib) {
    long got = 0;
    for (long i = 0; i < mib; i++) {
        char *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 1, 1 << 20);
        got++;
    }
    printf("RESULT mib=%ld\n", got);
    return 0;
}

/* spread N MiB: N children each take and touch MiB mebibytes and hold them; prints how many
 * held theirs at once. Each child stays under a per-process limit: only a limit over the whole
 * tree (a memory cgroup) stops the sum. */
static int spread(long n, long mib) {
    int done[2];
    if (pipe(done) < 0) { printf("RESULT held=0 errno=%d\n", errno); return 0; }
    pid_t kids[64];
    long started = 0;
    for (long i = 0; i < n && i < 64; i++) {
        pid_t p = fork();
        if (p < 0) break;
        if (p == 0) {
            close(done[0]);
            volatile char *m = malloc((size_t)mib << 20);
            if (!m) _exit(1);
            /* volatile: the compiler may not drop the writes, which make the pages real. */
            for (size_t i = 0; i < ((size_t)mib << 20); i += 4096) m[i] = 1;
            (void)!write(done[1], "x", 1);
            close(done[1]);
            for (;;) pause();
        }
        kids[started++] = p;
    }
    close(done[1]);
    /* Each child closes its end once it holds its memory, or dies: then read gives 0. */
    long held = 0;
    char c;
    while (read(done[0], &c, 1) == 1) held++;
    printf("RESULT held=%ld started=%ld\n", held, started);
    fflush(stdout);
    for (long i = 0; i < started; i++) kill(kids[i], SIGKILL);
    while (wait(NULL) > 0) {}
    return 0;
}

/* write PATH MiB: writes up to MiB mebibytes to PATH (SIGXFSZ ignored, so EFBIG shows). */
static int big_write(const char *path, long mib) {
    signal(SIGXFSZ, SIG_IGN);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) { printf("RESULT mib=0 errno=%d\n", errno); return 0; }
    static char buf[1 << 20];
    memset(buf, 'x', sizeof buf);
    long done = 0;
    int err = 0;
    for (long i = 0; i < mib; i++) {
        ssize_t w = write(fd, buf, sizeof buf);
        if (w != (ssize_t)sizeof buf) { err = w < 0 ? errno : ENOSPC; break; }
        done++;
    }
    close(fd);
    unlink(path);
    printf("RESULT mib=%ld errno=%d\n", done, err);
    return 0;
}

/* alloc PATH MIB: reserves MIB MiB with fallocate(FALLOC_FL_KEEP_SIZE), which RLIMIT_FSIZE
   does not bound; prints the blocks it holds then (in MiB) and errno. */
static int alloc(const char *path, long mib) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) { printf("RESULT mib=0 errno=%d\n", errno); return 0; }
    int err = 0;
    if (syscall(SYS_fallocate, fd, 1 /* FALLOC_FL_KEEP_SIZE */, 0L, mib << 20) != 0) err = errno;
    struct stat st;
    long held = fstat(fd, &st) == 0 ? (long)(st.st_blocks * 512 >> 20) : -1;
    close(fd);
    unlink(path);
    printf("RESULT mib=%ld errno=%d\n", held, err);
    return 0;
}

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

/* One way of direct_io below: opens PATH for writing with O_DIRECT the way WAY says, falling
 * back as a careful program does (openat2's ENOSYS to openat, then EINVAL to buffered I/O),
 * writes 4 KiB from an unaligned buffer (direct I/O refuses it: EINVAL) and 1 MiB from an
 * aligned one. Prints WAY=errno of the direct attempt, WAY_fallback=errno of openat after
 * openat2's ENOSYS (-1: none), WAY_direct=1 if the descriptor has O_DIRECT, WAY_unaligned=
 * errno of the unaligned write, WAY_kib=KiB the aligned write wrote. */
static void direct_way(const char *way, const char *path, char *buf) {
    const int flags = O_WRONLY | O_CREAT | O_TRUNC;
    long fd = -1;
    int err = 0, fallback = -1;
    unlink(path);
    if (!strcmp(way, "open")) {
        fd = syscall(SYS_open, path, flags | O_DIRECT, 0600);
        if (fd < 0) err = errno;
    } else if (!strcmp(way, "openat")) {
        fd = syscall(SYS_openat, AT_FDCWD, path, flags | O_DIRECT, 0600);
        if (fd < 0) err = errno;
    } else if (!strcmp(way, "openat2")) {
        struct { uint64_t flags, mode, resolve; } how = {flags | O_DIRECT, 0600, 0};
        fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
        if (fd < 0) err = errno;
        if (fd < 0 && err == ENOSYS) {
            fd = syscall(SYS_openat, AT_FDCWD, path, flags | O_DIRECT, 0600);
            fallback = fd < 0 ? errno : 0;
        }
    } else {
        fd = open(path, flags, 0600);
        if (fd >= 0) {
            int fl = fcntl(fd, F_GETFL);
            if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) != 0) err = errno;
        } else {
            err = errno;
        }
    }
    if (fd < 0 && errno == EINVAL) fd = open(path, flags, 0600);
    int direct = -1, unaligned = -1;
    long kib = 0;
    if (fd >= 0) {
        int fl = fcntl(fd, F_GETFL);
        direct = fl >= 0 && (fl & O_DIRECT) ? 1 : 0;
        unaligned = pwrite(fd, buf + 1, 4096, 0) == 4096 ? 0 : errno;
        ssize_t w = pwrite(fd, buf, 1 << 20, 0);
        kib = w > 0 ? w >> 10 : 0;
        close(fd);
    }
    unlink(path);
    printf(" %s=%d %s_fallback=%d %s_direct=%d %s_unaligned=%d %s_kib=%ld", way, err, way,
           fallback, way, direct, way, unaligned, way, kib);
}

/* direct PATH: direct I/O four ways (see direct_way), and aio=errno of io_setup (Linux AIO,
 * which queues direct writes). A direct write waits for the disk uninterruptibly, where
 * neither the cgroup freezer nor SIGKILL stops it (outside attack: 99-132 MiB past a 4 MiB
 * quota). */
static int direct_io(const char *path) {
    char *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, (1 << 20) + 4096) != 0) return 2;
    memset(buf, 'x', (1 << 20) + 4096);
    printf("RESULT");
    direct_way("open", path, buf);
    direct_way("openat", path, buf);
    direct_way("openat2", path, buf);
    direct_way("fcntl", path, buf);
    unsigned long ctx = 0;
    int aio = syscall(SYS_io_setup, 1, &ctx) == 0 ? 0 : errno;
    if (aio == 0) syscall(SYS_io_destroy, ctx);
    printf(" aio=%d\n", aio);
    free(buf);
    return 0;
}

/* read PATH: reads up to 4 KiB, prints the byte count or errno. */
static int read_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("RESULT read=-1 errno=%d\n", errno); return 0; }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    printf("RESULT read=%zd errno=%d\n", n, n < 0 ? errno : 0);
    return 0;
}

/* list PATH: counts directory entries. */
static int list(const char *path) {
    DIR *d = opendir(path);
    if (!d) { printf("RESULT entries=-1 errno=%d\n", errno); return 0; }
    long n = 0;
    while (readdir(d)) n++;
    printf("RESULT entries=%ld errno=0\n", n);
    return 0;
}

/* ptrace PID: PTRACE_SEIZE (does not stop the tracee); exiting detaches. */
static int trace(long pid) {
    long r = ptrace(PTRACE_SEIZE, (pid_t)pid, 0, 0);
    printf("RESULT ptrace=%ld errno=%d\n", r, r < 0 ? errno : 0);
    return 0;
}

/* tracefile PATH N: N processes refused ptrace for ever, counting each EPERM they see into
   PATH (8 bytes, shared: what a kill leaves there is what they saw). */
static int tracefile(const char *path, long n) {
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, 8) != 0) return 2;
    unsigned long *seen = mmap(NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (seen == MAP_FAILED) return 3;
    for (long i = 1; i < n; i++)
        if (fork() == 0) break;
    for (;;) {
        long r = ptrace(PTRACE_SEIZE, 1, 0, 0);
        if (r < 0 && errno == EPERM) __atomic_add_fetch(seen, 1, __ATOMIC_SEQ_CST);
    }
}

/* x32: getpid through the x32 ABI (nr | 0x40000000). */
static int x32(void) {
    long r = syscall(0x40000000L | SYS_getpid);
    printf("RESULT x32=%ld errno=%d\n", r, r < 0 ? errno : 0);
    return 0;
}

/* memfd: anonymous files hold memory that RLIMIT_AS does not count (red team: 1.2 GB held
 * under a 64 MiB address-space limit), and run code from memory (execveat on the fd). */
static int memfd(void) {
    long fd = syscall(SYS_memfd_create, "x", 0);
    printf("RESULT memfd=%ld errno=%d\n", fd, fd < 0 ? errno : 0);
    return 0;
}

/* i386: getpid (20) through int 0x80, the 32-bit ABI: a foreign architecture. */
static int foreign_arch(void) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
    printf("RESULT i386=%ld\n", r);
    return 0;
}

/* intr N: N children flood a refused call (unshare(0): harmless outside the sandbox), and
 * the program makes an i386 call (getpid through int 0x80) cut by a SIGALRM after 30 us, up
 * to 200 times: a call of another architecture that a signal interrupts before the host
 * reads it is neither run nor seen. Prints how many ran and how many were interrupted. */
static void on_alarm(int sig) { (void)sig; }
static int intr(long n) {
    pid_t kids[16];
    int ready[2];
    if (n > 16) n = 16;
    if (pipe(ready) != 0) return 1;
    for (long i = 0; i < n; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            /* One refusal answered before the flood is said to be under way: on a loaded
             * machine the i386 calls could otherwise all come before any child ran. */
            syscall(SYS_unshare, 0);
            if (write(ready[1], "r", 1) != 1) _exit(1);
            for (;;) syscall(SYS_unshare, 0);
        }
    }
    for (long i = 0; i < n; i++) {
        char c;
        if (kids[i] > 0 && read(ready[0], &c, 1) != 1) return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    int ran = 0, cut = 0;
    for (int i = 0; i < 200; i++) {
        struct itimerval t = {{0, 0}, {0, 30}};
        setitimer(ITIMER_REAL, &t, NULL);
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
        if (r == -EINTR) cut++;
        else if (r > 0) ran++;
    }
    for (long i = 0; i < n; i++) if (kids[i] > 0) kill(kids[i], SIGKILL);
    printf("RESULT ran=%d cut=%d\n", ran, cut);
    return 0;
}

/* create PATH...: tries to create and write each path. */
static int create(int argc, char **argv) {
    printf("RESULT");
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = fd < 0 ? errno : 0;
        if (fd >= 0) { if (write(fd, "x", 1) != 1) err = errno; close(fd); }
        printf(" %s=%d", argv[i], err);
    }
    printf("\n");
    return 0;
}

/* connect PORT: TCP connect to 127.0.0.1:PORT. */
static int tcp(long port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) { printf("RESULT connect=-1 step=socket errno=%d\n", errno); return 0; }
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    printf("RESULT connect=%d step=connect errno=%d\n", r, r < 0 ? errno : 0);
    return 0;
}

/* daemon MARKER exit|stay TICKS: double fork + setsid; the grandchild rewrites MARKER with a
 * counter every 10 ms, TICKS times. The program waits 100 ms (so the grandchild has written),
 * then exits or sleeps. */
static int daemonize(const char *marker, const char *mode, long ticks) {
    pid_t c = fork();
    if (c < 0) { printf("RESULT daemon=-1 errno=%d\n", errno); return 0; }
    if (c == 0) {
        setsid();
        pid_t g = fork();
        if (g != 0) _exit(0);
        /* A real daemon lets go of the caller's pipes. */
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); close(null); }
        for (long i = 0; i < ticks; i++) {
            int fd = open(marker, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) { dprintf(fd, "%ld\n", i); close(fd); }
            sleep_ms(10);
        }
        _exit(0);
    }
    waitpid(c, NULL, 0);
    sleep_ms(100);
    printf("RESULT daemon=started\n");
    fflush(stdout);
    if (strcmp(mode, "stay") == 0) for (;;) pause();
    return 0;
}

/* fdlist: open descriptors >= 3. */
static int fdlist(void) {
    printf("RESULT fds=");
    for (int fd = 3; fd < 65536; fd++)
        if (fcntl(fd, F_GETFD) != -1) printf("%d,", fd);
    printf("\n");
    return 0;
}

/* env: the environment, ';'-separated. */
static int env(void) {
    printf("RESULT env=");
    for (char **e = environ; *e; e++) printf("%s;", *e);
    printf("\n");
    return 0;
}

/* id: uid, gid, pid (1 in the sandbox), groups count. */
static int id(void) {
    gid_t g[64];
    int n = getgroups(64, g);
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    printf("RESULT uid=%d gid=%d pid=%d groups=%d host=%s\n", getuid(), getgid(), getpid(), n, host);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *a = argv[1];
    long n = argc > 2 ? atol(argv[2]) : 0;
    if (!strcmp(a, "fork")) return fork_bomb(n);
    if (!strcmp(a, "hold")) return hold(n);
    if (!strcmp(a, "fds")) return fds(n);
    if (!strcmp(a, "mem")) return mem(n);
    if (!strcmp(a, "spread") && argc > 3) return spread(n, atol(argv[3]));
    if (!strcmp(a, "write") && argc > 3) return big_write(argv[2], atol(argv[3]));
    if (!strcmp(a, "read") && argc > 2) return read_file(argv[2]);
    if (!strcmp(a, "direct") && argc > 2) return direct_io(argv[2]);
    if (!strcmp(a, "alloc") && argc > 3) return alloc(argv[2], atol(argv[3]));
    if (!strcmp(a, "list") && argc > 2) return list(argv[2]);
    if (!strcmp(a, "ptrace")) return trace(n);
    if (!strcmp(a, "tracefile") && argc > 3) return tracefile(argv[2], atol(argv[3]));
    if (!strcmp(a, "x32")) return x32();
    if (!strcmp(a, "i386")) return foreign_arch();
    if (!strcmp(a, "intr")) return intr(n);
    if (!strcmp(a, "memfd")) return memfd();
    if (!strcmp(a, "create")) return create(argc - 2, argv + 2);
    if (!strcmp(a, "connect")) return tcp(n);
    if (!strcmp(a, "daemon") && argc > 4) return daemonize(argv[2], argv[3], atol(argv[4]));
    if (!strcmp(a, "fdlist")) return fdlist();
    if (!strcmp(a, "env")) return env();
    if (!strcmp(a, "id")) return id();
    if (!strcmp(a, "sleep")) { for (;;) pause(); }
    if (!strcmp(a, "spin")) { /* a spinning child, and SIGCONT every 10 ms to itself */
        if (fork() == 0) for (volatile unsigned long i = 0;; i++) {}
        signal(SIGCONT, SIG_IGN);
        for (;;) { kill(getpid(), SIGCONT); sleep_ms(10); }
    }
    if (!strcmp(a, "echo")) {
        char buf[4096];
        ssize_t r;
        while ((r = read(0, buf, sizeof buf)) > 0) if (write(1, buf, r) != r) return 1;
        return 0;
    }
    return 2;
}
