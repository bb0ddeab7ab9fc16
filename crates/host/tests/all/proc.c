/* A process extension for the host's tests, well-behaved or hostile by the METHOD of each call
 * (the input is its argument). Built by the tests with `cc -static` (the sandbox has no libc).
 * Serves calls until stdin closes.
 *
 *   echo      kv.set("last" = input) then kv.get: answers the value read back (or the host's
 *             error name as the extension's error)
 *   leak      kv.get("last") and tells it everywhere: stderr, log, and its error message
 *   secret    secrets.get(input), logs the value, writes it to stderr, answers it
 *   fetch     http.fetch GET input (a URL): answers the status, or the host's error name
 *   invoke    invokes "EXTENSION METHOD" (input) with empty input: answers its output, or the
 *             host's error name as its own error
 *   tcont     starts a thread that spins and a timer that sends the process SIGCONT every
 *             10 ms (so a stop between calls does not hold), answers at once
 *   bgspin    forks a child that spins for ever, answers at once
 *   preanswer answers, then writes a forged answer for the next call's id
 *   exitok    answers, then exits with status 0
 *   lateexit  answers, then exits 50 ms later without reading anything more (`_exit(0)`)
 *   armtee    answers, then waits for the next call, peeks at it with `tee` (leaving it
 *             unread), tells the host something (a log notification) and exits
 *   armoom    answers, then waits for the next call, starts 4 children of 12 MiB each (over
 *             the sandbox's 32 MiB: one is killed for the limit) and exits 300 ms later
 *   pid       answers its pid (1: the init of its own pid namespace)
 *   state     answers how many calls this process has served (1 unless warm)
 *   hold      keeps its input in memory, answers "held"
 *   spill     tells what `hold` kept (stderr, log, its error message), without any host request
 *             for it: "nothing-kept" in a fresh process
 *   environ   tries to read /proc/1/environ and the host's files: answers what it could open
 *   write     tries to create files outside its grants: answers which ones worked
 *   socket    tries to connect to 127.0.0.1:PORT (input): answers the errno
 *   chmod     makes /data mode 0777 (its own folder: allowed), answers "done"
 *   bigfile   writes up to 100 MiB to /tmp/big: answers the bytes it got written
 *   fill      writes N (input) files of 1 MiB into /data: answers how many it wrote
 *   fork      forks until refused, answers how many it made (children sleep, then are killed)
 *   daemon    double-forks a grandchild that calls setsid and writes a file every 10 ms to
 *             /data/alive if it exists, answers at once
 *   mem       allocates and touches 1 MiB blocks until refused: answers the MiB it got
 *   touch     maps and touches N (input) MiB, unmaps them, answers N: a peak it no longer holds
 *   escape    tries ptrace of pid 1 and of its parent, a raw x32 system call, unshare, mount
 *             and opening more files than its limit: answers what worked
 *   i386      getpid through int 0x80 (the i386 ABI: another architecture), then answers
 *   mapdeleted N MiB in files it maps, closes and deletes at once, then fills through the
 *             mappings (kept): in no folder and no descriptor, still on disk; answers N
 *   flood     writes endless bytes to stdout (no header line ever ends)
 *   spin      loops for ever
 *   silent    never answers
 *   huge      declares a 1 GiB frame and writes for ever
 *   deep      answers with 100000 nested arrays
 *   exit      exits with status 3 without answering
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <signal.h>
#include <pthread.h>
#include <time.h>
#include <sys/prctl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

static void *spin_thread(void *arg) {
    (void)arg;
    for (volatile unsigned long i = 0;; i++) {}
    return NULL;
}

/* Refused by the sandbox every 20 ms, for ever: ptrace of the namespace's init. */
static void *ptrace_thread(void *arg) {
    (void)arg;
    for (;;) {
        struct timespec t = {0, 20000000};
        nanosleep(&t, NULL);
        syscall(SYS_ptrace, PTRACE_ATTACH, 1, 0, 0);
    }
    return NULL;
}

static void put(const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, buf, n);
        if (w <= 0) exit(3);
        buf += w;
        n -= (size_t)w;
    }
}

static void send_frame(const char *body, size_t n) {
    char head[64];
    int h = snprintf(head, sizeof head, "Content-Length: %zu\r\n\r\n", n);
    put(head, (size_t)h);
    put(body, n);
}

static char *read_frame(void) {
    char line[256];
    size_t len = 0;
    int got_len = 0;
    for (;;) {
        size_t have = 0;
        for (;;) {
            char c;
            ssize_t r = read(0, &c, 1);
            if (r <= 0) return NULL;
            if (have + 1 >= sizeof line) exit(4);
            line[have++] = c;
            if (c == '\n') break;
        }
        line[have] = 0;
        if (strcmp(line, "\r\n") == 0) break;
        if (strncmp(line, "Content-Length: ", 16) == 0) {
            len = strtoul(line + 16, NULL, 10);
            got_len = 1;
        }
    }
    if (!got_len || len > (64u << 20)) exit(5);
    char *body = malloc(len + 1);
    if (!body) exit(6);
    size_t off = 0;
    while (off < len) {
        ssize_t r = read(0, body + off, len - off);
        if (r <= 0) exit(7);
        off += (size_t)r;
    }
    body[len] = 0;
    return body;
}

static char *str_field(const char *json, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(json, pat);
    if (!p) return NULL;
    p += strlen(pat);
    const char *e = strchr(p, '"');
    if (!e) exit(9);
    char *s = malloc((size_t)(e - p) + 1);
    if (!s) exit(6);
    memcpy(s, p, (size_t)(e - p));
    s[e - p] = 0;
    return s;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64(const char *s) {
    size_t n = strlen(s), o = 0;
    char *out = malloc(4 * (n / 3 + 1) + 1);
    if (!out) exit(6);
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)s[i] << 16;
        if (i + 1 < n) v |= (unsigned char)s[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)s[i + 2];
        out[o++] = B64[(v >> 18) & 63];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? B64[v & 63] : '=';
    }
    out[o] = 0;
    return out;
}

static char *unb64(const char *s) {
    size_t n = strlen(s), o = 0;
    char *out = malloc(n + 1);
    if (!out) exit(6);
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        const char *p = strchr(B64, s[i]);
        if (!p) break;
        v = (v << 6) | (unsigned)(p - B64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((v >> bits) & 255);
        }
    }
    out[o] = 0;
    return out;
}

static char *host_request(const char *method, const char *params) {
    size_t n = strlen(method) + strlen(params) + 64;
    char *req = malloc(n);
    if (!req) exit(6);
    int k = snprintf(req, n, "{\"jsonrpc\":\"2.0\",\"id\":\"h\",\"method\":\"%s\",\"params\":%s}",
                     method, params);
    send_frame(req, (size_t)k);
    free(req);
    char *resp = read_frame();
    if (!resp) exit(10);
    return resp;
}

static void answer(long id, const char *text) {
    char *enc = b64(text);
    size_t n = strlen(enc) + 96;
    char *body = malloc(n);
    if (!body) exit(6);
    int k = snprintf(body, n, "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"result\":{\"output\":\"%s\"}}", id,
                     enc);
    send_frame(body, (size_t)k);
    free(body);
    free(enc);
}

static void answer_error(long id, const char *name, const char *message) {
    char body[512];
    int k = snprintf(body, sizeof body,
                     "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"error\":{\"code\":-32003,\"message\":\"%s\","
                     "\"data\":{\"code\":\"%s\"}}}",
                     id, message, name);
    send_frame(body, (size_t)k);
}

/* The host's error name in a response, or NULL if it succeeded. */
static char *error_name(const char *resp) {
    if (!strstr(resp, "\"error\"")) return NULL;
    char *name = str_field(resp, "code");
    return name ? name : strdup("error");
}

static int served = 0;

/* What `hold` was handed, for a later call's `spill` (only a warm process keeps it). */
static char kept[1024];

/* Starts `work` in a thread, and a timer that sends SIGCONT after `first_ns`, then every
   10 ms; answers "ticking". */
static void ticking(long id, void *(*work)(void *), long first_ns) {
    pthread_t t;
    pthread_create(&t, NULL, work, NULL);
    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGCONT;
    timer_t timer;
    struct itimerspec every = {{0, 10000000}, {0, first_ns}};
    if (timer_create(CLOCK_MONOTONIC, &ev, &timer) == 0) timer_settime(timer, 0, &every, NULL);
    answer(id, "ticking");
}

static void handle(long id, const char *method, const char *arg) {
    char buf[4096];
    if (strcmp(method, "echo") == 0) {
        char *enc = b64(arg);
        snprintf(buf, sizeof buf, "{\"bucket\":\"b\",\"key\":\"last\",\"value\":\"%s\"}", enc);
        free(enc);
        char *set = host_request("kv.set", buf);
        char *e = error_name(set);
        if (e) { answer_error(id, e, "kv.set was refused"); return; }
        char *got = host_request("kv.get", "{\"bucket\":\"b\",\"key\":\"last\"}");
        char *v = str_field(got, "value");
        if (!v) { answer_error(id, "not-found", "kv.get found nothing"); return; }
        char *plain = unb64(v);
        answer(id, plain);
    } else if (strcmp(method, "leak") == 0) {
        char *got = host_request("kv.get", "{\"bucket\":\"b\",\"key\":\"last\"}");
        char *v = str_field(got, "value");
        char *plain = unb64(v ? v : "");
        fprintf(stderr, "leak: %s\n", plain);
        snprintf(buf, sizeof buf, "{\"level\":\"info\",\"message\":\"leak=%s\"}", plain);
        free(host_request("log", buf));
        answer_error(id, "leak", plain);
    } else if (strcmp(method, "secret") == 0) {
        snprintf(buf, sizeof buf, "{\"name\":\"%s\"}", arg);
        char *got = host_request("secrets.get", buf);
        char *e = error_name(got);
        if (e) { answer_error(id, e, "secrets.get was refused"); return; }
        char *v = str_field(got, "value");
        if (!v) { answer_error(id, "not-set", "no value"); return; }
        fprintf(stderr, "the secret is %s\n", v);
        snprintf(buf, sizeof buf, "{\"level\":\"info\",\"message\":\"secret=%s\"}", v);
        free(host_request("log", buf));
        answer(id, v);
    } else if (strcmp(method, "fetch") == 0) {
        snprintf(buf, sizeof buf, "{\"method\":\"GET\",\"url\":\"%s\"}", arg);
        char *got = host_request("http.fetch", buf);
        char *e = error_name(got);
        if (e) { answer_error(id, e, "http.fetch was refused"); return; }
        const char *s = strstr(got, "\"status\":");
        answer(id, s ? s + 9 : "?");
    } else if (strcmp(method, "invoke") == 0) {
        char ext[256] = {0}, m[256] = {0};
        if (sscanf(arg, "%255s %255s", ext, m) != 2) { answer_error(id, "bad-input", "EXT METHOD"); return; }
        snprintf(buf, sizeof buf, "{\"extension\":\"%s\",\"method\":\"%s\",\"input\":\"\"}", ext, m);
        char *got = host_request("invoke", buf);
        char *e = error_name(got);
        if (e) { answer_error(id, e, "invoke was refused"); return; }
        char *v = str_field(got, "output");
        char *plain = unb64(v ? v : "");
        answer(id, plain);
    } else if (strcmp(method, "tcont") == 0) {
        /* Spins, and has itself continued every 10 ms if stopped. */
        ticking(id, spin_thread, 10000000);
    } else if (strcmp(method, "lateptrace") == 0) {
        /* Has itself continued 50 ms after its answer, then every 10 ms, if stopped, and is
           refused meanwhile. */
        ticking(id, ptrace_thread, 50000000);
    } else if (strcmp(method, "bgspin") == 0) {
        pid_t p = fork();
        if (p == 0) { for (volatile unsigned long i = 0;; i++) {} }
        if (p < 0) snprintf(buf, sizeof buf, "fork failed: errno %d", errno);
        else snprintf(buf, sizeof buf, "spinning");
        answer(id, buf);
    } else if (strcmp(method, "preanswer") == 0) {
        answer(id, "real");
        char *enc = b64("FORGED");
        snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"result\":{\"output\":\"%s\"}}", id + 1, enc);
        send_frame(buf, strlen(buf));
    } else if (strcmp(method, "nap") == 0) {
        /* 200 ms asleep: stopped and resumed by every quota measure meanwhile. */
        struct timespec t = {0, 200000000};
        int r = nanosleep(&t, NULL);
        snprintf(buf, sizeof buf, "%d", r == 0 ? 0 : errno);
        answer(id, buf);
    } else if (strcmp(method, "lateexit") == 0) {
        answer(id, "bye");
        struct timespec t = {0, 50000000};
        nanosleep(&t, NULL);
        _exit(0);
    } else if (strcmp(method, "armtee") == 0) {
        answer(id, "armed");
        struct pollfd p = {0, POLLIN, 0};
        poll(&p, 1, 5000);
        int fds[2];
        if (pipe(fds) == 0) tee(0, fds[1], 1 << 16, 0);
        const char *note = "{\"jsonrpc\":\"2.0\",\"method\":\"log\",\"params\":"
                           "{\"level\":\"info\",\"message\":\"peeked\"}}";
        send_frame(note, strlen(note));
        _exit(0);
    } else if (strcmp(method, "armoom") == 0) {
        answer(id, "armed");
        struct pollfd p = {0, POLLIN, 0};
        poll(&p, 1, 5000);
        for (int i = 0; i < 4; i++) {
            if (fork() == 0) {
                volatile char *m = malloc(12 << 20);
                if (m) for (int j = 0; j < (12 << 20); j += 4096) m[j] = 1;
                for (;;) pause();
            }
        }
        struct timespec t = {0, 300000000};
        nanosleep(&t, NULL);
        _exit(0);
    } else if (strcmp(method, "logs") == 0) {
        long n = atol(arg), i;
        for (i = 0; i < n; i++) free(host_request("log", "{\"level\":\"debug\",\"message\":\"x\"}"));
        snprintf(buf, sizeof buf, "logged %ld", i);
        answer(id, buf);
    } else if (strcmp(method, "biglog") == 0) {
        /* One `log` request whose message is N bytes. */
        long n = atol(arg);
        char *req = malloc(n + 64);
        if (!req) exit(6);
        int k = sprintf(req, "{\"level\":\"debug\",\"message\":\"");
        memset(req + k, 'x', n);
        strcpy(req + k + n, "\"}");
        free(host_request("log", req));
        free(req);
        answer(id, "logged");
    } else if (strcmp(method, "exitok") == 0) {
        answer(id, "bye");
        exit(0);
    } else if (strcmp(method, "pid") == 0) {
        snprintf(buf, sizeof buf, "%d", (int)getpid());
        answer(id, buf);
    } else if (strcmp(method, "hold") == 0) {
        snprintf(kept, sizeof kept, "%s", arg);
        answer(id, "held");
    } else if (strcmp(method, "spill") == 0) {
        if (!kept[0]) { answer_error(id, "nothing-kept", "a fresh process"); return; }
        fprintf(stderr, "spill: kept %s\n", kept);
        snprintf(buf, sizeof buf, "{\"level\":\"info\",\"message\":\"kept=%s\"}", kept);
        free(host_request("log", buf));
        answer_error(id, "spilled", kept);
    } else if (strcmp(method, "state") == 0) {
        snprintf(buf, sizeof buf, "%d", served);
        answer(id, buf);
    } else if (strcmp(method, "environ") == 0) {
        const char *paths[] = {"/proc/1/environ", "/proc/self/environ", "/etc/passwd", "/root",
                               "/home", "/usr/bin/env", NULL};
        buf[0] = 0;
        for (int i = 0; paths[i]; i++) {
            int fd = open(paths[i], O_RDONLY);
            if (fd >= 0) { strcat(buf, paths[i]); strcat(buf, " "); close(fd); }
        }
        answer(id, buf[0] ? buf : "none");
    } else if (strcmp(method, "write") == 0) {
        const char *paths[] = {"/bundle/x", "/x", "/etc/x", "/dev/x", "/data/../x", NULL};
        buf[0] = 0;
        for (int i = 0; paths[i]; i++) {
            int fd = open(paths[i], O_WRONLY | O_CREAT, 0644);
            if (fd >= 0) { strcat(buf, paths[i]); strcat(buf, " "); close(fd); }
        }
        answer(id, buf[0] ? buf : "none");
    } else if (strcmp(method, "socket") == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) { snprintf(buf, sizeof buf, "socket: %s", strerror(errno)); answer(id, buf); return; }
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons((unsigned short)atoi(arg));
        a.sin_addr.s_addr = htonl(0x7f000001);
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) answer(id, "connected");
        else { snprintf(buf, sizeof buf, "connect: %s", strerror(errno)); answer(id, buf); }
        close(s);
    } else if (strcmp(method, "chmod") == 0) {
        answer(id, chmod("/data", 0777) == 0 ? "done" : "refused");
    } else if (strcmp(method, "bigfile") == 0) {
        /* One file, 1 MiB at a time, at arg (default /tmp/big), until a write fails. */
        static char block[1 << 20];
        signal(SIGXFSZ, SIG_IGN);
        int fd = open(arg[0] ? arg : "/tmp/big", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        long total = 0;
        for (int i = 0; fd >= 0 && i < 100; i++) {
            ssize_t w = write(fd, block, sizeof block);
            if (w <= 0) break;
            total += w;
        }
        snprintf(buf, sizeof buf, "%ld", total);
        answer(id, buf);
    } else if (strcmp(method, "fill") == 0) {
        /* arg "N [TAG]": N files of 1 MiB, /data/fTAG0 on. */
        static char block[1 << 20];
        char tag[16] = "";
        int n = 0, wrote = 0;
        sscanf(arg, "%d %15s", &n, tag);
        for (int i = 0; i < n; i++) {
            snprintf(buf, sizeof buf, "/data/f%s%d", tag, i);
            int fd = open(buf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0) break;
            if (write(fd, block, sizeof block) == (ssize_t)sizeof block) wrote++;
            close(fd);
        }
        snprintf(buf, sizeof buf, "%d", wrote);
        answer(id, buf);
    } else if (strcmp(method, "renamedover") == 0) {
        /* N files each kept under a second name while its first is renamed over by an empty
         * file, then written 1 MiB at a time through the descriptor: inotify reports the writes
         * under the first name, which names the empty file now. */
        static char block[1 << 20];
        int fds[32], n = atoi(arg), wrote = 0;
        if (n > 32) n = 32;
        mkdir("/data/r", 0700);
        for (int i = 0; i < n; i++) {
            char x[64], k[64], t[64];
            snprintf(x, sizeof x, "/data/r/x%d", i);
            snprintf(k, sizeof k, "/data/r/k%d", i);
            snprintf(t, sizeof t, "/data/r/t%d", i);
            fds[i] = open(x, O_CREAT | O_RDWR, 0600);
            link(x, k);
            close(open(t, O_CREAT | O_WRONLY, 0600));
            rename(t, x);
        }
        signal(SIGXFSZ, SIG_IGN);
        for (int off = 0; off < 64; off++)
            for (int i = 0; i < n; i++)
                if (pwrite(fds[i], block, sizeof block, (off_t)off << 20) == (ssize_t)sizeof block)
                    wrote++;
        snprintf(buf, sizeof buf, "%d", wrote);
        answer(id, buf);
    } else if (strcmp(method, "orphans") == 0) {
        /* N files opened in a folder made for it, kept under a second name elsewhere, their
         * first name and folder removed at once: their writes reach no folder's watch. Then
         * written 1 MiB at a time through the descriptors. */
        static char block[1 << 20];
        int fds[32], n = atoi(arg), wrote = 0;
        if (n > 32) n = 32;
        for (int i = 0; i < n; i++) {
            char q[64], x[64], k[64];
            snprintf(q, sizeof q, "/data/q%d", i);
            snprintf(x, sizeof x, "/data/q%d/x", i);
            snprintf(k, sizeof k, "/data/k%d", i);
            mkdir(q, 0700);
            fds[i] = open(x, O_CREAT | O_RDWR, 0600);
            link(x, k);
            unlink(x);
            rmdir(q);
        }
        signal(SIGXFSZ, SIG_IGN);
        for (int off = 0; off < 64; off++)
            for (int i = 0; i < n; i++)
                if (pwrite(fds[i], block, sizeof block, (off_t)off << 20) == (ssize_t)sizeof block)
                    wrote++;
        snprintf(buf, sizeof buf, "%d", wrote);
        answer(id, buf);
    } else if (strcmp(method, "heldfill") == 0) {
        /* One byte in a file deleted and kept open, then N files of 1 MiB. */
        static char block[1 << 20];
        int n = atoi(arg), wrote = 0;
        int h = open("/data/held", O_RDWR | O_CREAT | O_TRUNC, 0600);
        unlink("/data/held");
        if (h >= 0) write(h, "x", 1);
        for (int i = 0; i < n; i++) {
            snprintf(buf, sizeof buf, "/data/g%d", i);
            int fd = open(buf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0) break;
            if (write(fd, block, sizeof block) == (ssize_t)sizeof block) wrote++;
            close(fd);
        }
        snprintf(buf, sizeof buf, "%d", wrote);
        answer(id, buf);
    } else if (strcmp(method, "folders") == 0) {
        /* N empty folders: a tree slow to measure. */
        int n = atoi(arg), made = 0;
        for (int i = 0; i < n; i++) {
            snprintf(buf, sizeof buf, "/data/d%d", i);
            if (mkdir(buf, 0700) == 0) made++;
        }
        snprintf(buf, sizeof buf, "%d", made);
        answer(id, buf);
    } else if (strcmp(method, "holddeleted") == 0) {
        /* N MiB in a file it deletes at once and keeps open: in no folder, still on disk. */
        static char block[1 << 20];
        static int held = -1;
        int n = atoi(arg), wrote = 0;
        held = open("/data/held", O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (held >= 0) {
            unlink("/data/held");
            for (int i = 0; i < n; i++)
                if (write(held, block, sizeof block) == (ssize_t)sizeof block) wrote++;
        }
        snprintf(buf, sizeof buf, "%d", wrote);
        answer(id, buf);
    } else if (strcmp(method, "mapdeleted") == 0) {
        int n = atoi(arg), mapped = 0;
        for (int i = 0; i < n; i++) {
            snprintf(buf, sizeof buf, "/data/m%d", i);
            int fd = open(buf, O_RDWR | O_CREAT | O_TRUNC, 0600);
            if (fd < 0) break;
            void *p = MAP_FAILED;
            if (ftruncate(fd, 1 << 20) == 0)
                p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            close(fd);
            unlink(buf);
            if (p == MAP_FAILED) break;
            memset(p, 1, 1 << 20);
            mapped++;
        }
        snprintf(buf, sizeof buf, "%d", mapped);
        answer(id, buf);
    } else if (strcmp(method, "crowd") == 0) {
        /* crowd "N MS": N children spin for MS ms of wall time, then each says how many CPUs
           it may run on; answers the fewest any of them had, and the most. */
        int n = 4, ms = 300;
        sscanf(arg, "%d %d", &n, &ms);
        int fds[2];
        if (pipe(fds) != 0) { answer(id, "pipe failed"); return; }
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < n; i++) {
            if (fork() == 0) {
                close(fds[0]);
                for (;;) {
                    struct timespec t;
                    clock_gettime(CLOCK_MONOTONIC, &t);
                    if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= ms) break;
                }
                cpu_set_t set;
                unsigned char c = sched_getaffinity(0, sizeof set, &set) == 0 ? (unsigned char)CPU_COUNT(&set) : 0;
                (void)!write(fds[1], &c, 1);
                _exit(0);
            }
        }
        close(fds[1]);
        unsigned char c;
        int least = 255, most = 0;
        while (read(fds[0], &c, 1) == 1) { if (c < least) least = c; if (c > most) most = c; }
        close(fds[0]);
        while (wait(NULL) > 0) {}
        snprintf(buf, sizeof buf, "%d %d", least, most);
        answer(id, buf);
    } else if (strcmp(method, "fork") == 0) {
        int made = 0;
        for (int i = 0; i < 100000; i++) {
            pid_t p = fork();
            if (p < 0) break;
            if (p == 0) { for (;;) pause(); }
            made++;
        }
        snprintf(buf, sizeof buf, "%d", made);
        answer(id, buf);
    } else if (strcmp(method, "daemon") == 0) {
        pid_t p = fork();
        if (p == 0) {
            if (fork() == 0) {
                setsid();
                for (;;) {
                    int fd = open("/data/alive", O_WRONLY | O_APPEND);
                    if (fd >= 0) { (void)!write(fd, "x", 1); close(fd); }
                    usleep(10000);
                }
            }
            _exit(0);
        }
        answer(id, "forked");
    } else if (strcmp(method, "spread") == 0) {
        /* 6 children take 12 MiB each (each under max_memory): only a limit over the whole
         * sandbox stops the sum. Answers how many hold theirs at once at the end: a child
         * that got its 12 MiB and was then killed for the limit (the kernel picks the
         * largest, often one that is done) does not count. Each child is asked in turn
         * whether it lives: a killed one, even one still dying (its pipes closed before it
         * can be waited for), never answers, so its answer pipe reads end-of-file. */
        int done[2];
        int held = 0;
        pid_t kids[6];
        int ask[6], told[6];
        int n = 0;
        if (pipe(done) == 0) {
            for (; n < 6; n++) {
                int a[2], t[2];
                if (pipe(a) != 0) break;
                if (pipe(t) != 0) { close(a[0]); close(a[1]); break; }
                pid_t p = fork();
                if (p < 0) { close(a[0]); close(a[1]); close(t[0]); close(t[1]); break; }
                if (p == 0) {
                    close(done[0]);
                    close(a[1]);
                    close(t[0]);
                    for (int i = 0; i < n; i++) { close(ask[i]); close(told[i]); }
                    volatile char *m = malloc(12 << 20);
                    if (!m) _exit(1);
                    for (int i = 0; i < (12 << 20); i += 4096) m[i] = 1;
                    (void)!write(done[1], "x", 1);
                    close(done[1]);
                    char c0;
                    while (read(a[0], &c0, 1) == 1) (void)!write(t[1], "y", 1);
                    _exit(0);
                }
                close(a[0]);
                close(t[1]);
                ask[n] = a[1];
                told[n] = t[0];
                kids[n] = p;
            }
            close(done[1]);
            char c;
            while (read(done[0], &c, 1) == 1) {}
            signal(SIGPIPE, SIG_IGN); /* asking a dead child must not end the asker */
            close(done[0]);
            for (int i = 0; i < n; i++)
                if (write(ask[i], "?", 1) == 1 && read(told[i], &c, 1) == 1) held++;
            for (int i = 0; i < n; i++) { kill(kids[i], SIGKILL); close(ask[i]); close(told[i]); }
            while (wait(NULL) > 0) {}
        }
        snprintf(buf, sizeof buf, "%d", held);
        answer(id, buf);
    } else if (strcmp(method, "touch") == 0) {
        size_t len = (size_t)atoi(arg) << 20;
        char *m = len ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                      : MAP_FAILED;
        if (m == MAP_FAILED) { answer_error(id, "touch", "no memory mapped"); return; }
        memset(m, 1, len);
        munmap(m, len);
        snprintf(buf, sizeof buf, "%d", atoi(arg));
        answer(id, buf);
    } else if (strcmp(method, "mem") == 0) {
        int mib = 0;
        for (;;) {
            char *b = malloc(1 << 20);
            if (!b) break;
            memset(b, 1, 1 << 20);
            mib++;
        }
        snprintf(buf, sizeof buf, "%d", mib);
        answer(id, buf);
    } else if (strcmp(method, "escape") == 0) {
        buf[0] = 0;
        if (ptrace(PTRACE_ATTACH, 1, 0, 0) == 0) strcat(buf, "ptrace-1 ");
        if (ptrace(PTRACE_ATTACH, getppid(), 0, 0) == 0) strcat(buf, "ptrace-parent ");
        /* getpid with the x32 bit set: refused by the filter, never run. */
        if (syscall(__X32_SYSCALL_BIT + 39) >= 0) strcat(buf, "x32 ");
        if (unshare(CLONE_NEWUSER) == 0) strcat(buf, "unshare ");
        if (mount("none", "/tmp", "tmpfs", 0, 0) == 0) strcat(buf, "mount ");
        /* A filter of its own (allow all here) would let a later one hide refusals. */
        struct sock_filter allow_all = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
        struct sock_fprog own = { 1, &allow_all };
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &own, 0, 0) == 0) strcat(buf, "seccomp ");
        int opened = 0;
        for (int i = 0; i < 100000; i++) {
            if (open("/dev/null", O_RDONLY) < 0) break;
            opened++;
        }
        if (opened > 1000) strcat(buf, "fds ");
        answer(id, buf[0] ? buf : "none");
    } else if (strcmp(method, "i386") == 0) {
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
        snprintf(buf, sizeof buf, "i386 getpid %ld", r);
        answer(id, buf);
    } else if (strcmp(method, "flood") == 0) {
        static char junk[65536];
        memset(junk, 'A', sizeof junk);
        for (;;) put(junk, sizeof junk);
    } else if (strcmp(method, "spin") == 0) {
        for (volatile unsigned long i = 0;; i++) {}
    } else if (strcmp(method, "silent") == 0) {
        for (;;) pause();
    } else if (strcmp(method, "huge") == 0) {
        const char *h = "Content-Length: 1073741824\r\n\r\n";
        put(h, strlen(h));
        static char junk[65536];
        memset(junk, '[', sizeof junk);
        for (;;) put(junk, sizeof junk);
    } else if (strcmp(method, "deep") == 0) {
        size_t depth = 100000;
        char *body = malloc(2 * depth);
        if (!body) exit(6);
        memset(body, '[', depth);
        memset(body + depth, ']', depth);
        send_frame(body, 2 * depth);
        for (;;) pause();
    } else if (strcmp(method, "exit") == 0) {
        exit(3);
    } else {
        answer_error(id, "not-found", "no such method");
    }
}

int main(void) {
    char *call;
    while ((call = read_frame()) != NULL) {
        served++;
        const char *p = strstr(call, "\"id\":");
        if (!p) exit(8);
        long id = strtol(p + 5, NULL, 10);
        char *method = str_field(call, "method");
        /* The first "method" is the JSON-RPC one ("call"); the call's own follows it. */
        const char *params = strstr(call, "\"params\":");
        if (!params) exit(8);
        free(method);
        method = str_field(params, "method");
        char *input = str_field(params, "input");
        if (!method || !input) exit(12);
        char *arg = unb64(input);
        handle(id, method, arg);
        free(arg);
        free(input);
        free(method);
        free(call);
    }
    return 0;
}
