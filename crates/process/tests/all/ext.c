/* A process extension speaking warden's JSON-RPC protocol, well-behaved or hostile by its
 * first argument. Built by the tests with `cc -static` (the sandbox's root has no libc).
 *
 *   echo      per call: log, kv.set("last" = input), kv.get("last"), answer with the value
 *             read back (so the output is the input only if the host's kv worked); also
 *             writes a line with its pid to stderr (1 in the sandbox: the init of its pid
 *             namespace). Serves calls until stdin closes.
 *   huge      answers a call with a header declaring a 1 GiB frame, then writes forever
 *   deep      answers with a frame of 100 000 nested arrays
 *   silent    reads the call and never answers
 *   flood     writes endless bytes to stdout (no header line ever ends)
 *   spam      sends endless valid `log` notifications
 *   badutf8   answers with a frame holding an invalid UTF-8 byte
 *   midframe  declares 100 bytes, writes 11, exits
 *   wrongid   answers with the call's id + 1
 *   exit      reads the call, exits without answering
 *   chatty    writes 1 MiB to stderr (far more than a pipe holds), then answers ""
 *   stream    writes to stderr for 300 ms, then answers with the error `written` whose
 *             message is how many bytes it wrote
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* Reads one frame into a malloc'd NUL-terminated buffer; NULL at EOF. */
static char *read_frame(void) {
    char line[256];
    size_t len = 0, have = 0;
    int got_len = 0;
    for (;;) {
        have = 0;
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

/* The value of "key": as a number (ids). */
static long num_field(const char *json, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (!p) exit(8);
    return strtol(p + strlen(pat), NULL, 10);
}

/* A copy of the string value of "key": (base64 has no escapes to undo); NULL if absent or
 * not a string. */
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

/* Sends a host request and returns the host's answer (which must carry the same id). */
static char *host_request(const char *id, const char *method, const char *params) {
    size_t n = strlen(method) + strlen(params) + strlen(id) + 64;
    char *req = malloc(n);
    if (!req) exit(6);
    int k = snprintf(req, n, "{\"jsonrpc\":\"2.0\",\"id\":\"%s\",\"method\":\"%s\",\"params\":%s}",
                     id, method, params);
    send_frame(req, (size_t)k);
    free(req);
    char *resp = read_frame();
    if (!resp) exit(10);
    char want[80];
    snprintf(want, sizeof want, "\"id\":\"%s\"", id);
    if (!strstr(resp, want)) exit(11);
    return resp;
}

static void answer(long id, const char *output_b64) {
    size_t n = strlen(output_b64) + 96;
    char *body = malloc(n);
    if (!body) exit(6);
    int k = snprintf(body, n, "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"result\":{\"output\":\"%s\"}}", id,
                     output_b64);
    send_frame(body, (size_t)k);
    free(body);
}

static void answer_error(long id, const char *name, const char *message) {
    char body[512];
    int k = snprintf(body, sizeof body,
                     "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"error\":{\"code\":-32000,\"message\":\"%s\","
                     "\"data\":{\"code\":\"%s\"}}}",
                     id, message, name);
    send_frame(body, (size_t)k);
}

static int echo(void) {
    char *call;
    while ((call = read_frame()) != NULL) {
        long id = num_field(call, "id");
        char *input = str_field(call, "input");
        if (!input) exit(12);
        fprintf(stderr, "echo: call %ld (pid %d)\n", id, (int)getpid());
        free(host_request("l", "log", "{\"level\":\"info\",\"message\":\"echo called\"}"));

        size_t pn = strlen(input) + 64;
        char *params = malloc(pn);
        if (!params) exit(6);
        snprintf(params, pn, "{\"bucket\":\"b\",\"key\":\"last\",\"value\":\"%s\"}", input);
        char *set = host_request("s", "kv.set", params);
        free(params);
        if (!strstr(set, "\"result\":null")) {
            answer_error(id, "kv-failed", "kv.set was refused");
            continue;
        }
        char *got = host_request("g", "kv.get", "{\"bucket\":\"b\",\"key\":\"last\"}");
        /* A denied capability is an answer too, not the end of the call. */
        char *secret = host_request("x", "secrets.get", "{\"name\":\"token\"}");
        if (!strstr(secret, "\"denied\"")) fprintf(stderr, "echo: secrets.get was not denied\n");
        free(secret);
        char *value = str_field(got, "value");
        if (value) {
            answer(id, value);
        } else {
            answer_error(id, "not-found", "kv.get found nothing");
        }
        free(set);
        free(got);
        free(value);
        free(input);
        free(call);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "echo";
    if (strcmp(mode, "echo") == 0) return echo();

    char *call = read_frame();
    if (!call) return 2;
    long id = num_field(call, "id");

    if (strcmp(mode, "huge") == 0) {
        const char *h = "Content-Length: 1073741824\r\n\r\n";
        put(h, strlen(h));
        static char junk[65536];
        memset(junk, '[', sizeof junk);
        for (;;) put(junk, sizeof junk);
    } else if (strcmp(mode, "deep") == 0) {
        size_t depth = 100000;
        char *body = malloc(2 * depth);
        if (!body) exit(6);
        memset(body, '[', depth);
        memset(body + depth, ']', depth);
        send_frame(body, 2 * depth);
        pause();
    } else if (strcmp(mode, "silent") == 0) {
        for (;;) pause();
    } else if (strcmp(mode, "flood") == 0) {
        static char junk[65536];
        memset(junk, 'A', sizeof junk);
        for (;;) put(junk, sizeof junk);
    } else if (strcmp(mode, "spam") == 0) {
        const char *note = "{\"jsonrpc\":\"2.0\",\"method\":\"log\",\"params\":{\"level\":\"info\","
                           "\"message\":\"spam\"}}";
        for (;;) send_frame(note, strlen(note));
    } else if (strcmp(mode, "badutf8") == 0) {
        const char *body = "{\"jsonrpc\":\"2.0\",\"method\":\"log\",\"params\":{\"level\":\"info\","
                           "\"message\":\"\xff\xfe\"}}";
        send_frame(body, strlen(body));
        pause();
    } else if (strcmp(mode, "midframe") == 0) {
        const char *h = "Content-Length: 100\r\n\r\n{\"jsonrpc\"";
        put(h, strlen(h));
        return 0;
    } else if (strcmp(mode, "wrongid") == 0) {
        char body[128];
        int k = snprintf(body, sizeof body,
                         "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"result\":{\"output\":\"\"}}", id + 1);
        send_frame(body, (size_t)k);
        pause();
    } else if (strcmp(mode, "exit") == 0) {
        return 0;
    } else if (strcmp(mode, "stream") == 0) {
        static char junk[65536];
        memset(junk, 's', sizeof junk);
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long long written = 0;
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= 300) break;
            ssize_t w = write(2, junk, sizeof junk);
            if (w <= 0) return 3;
            written += w;
        }
        char n[32];
        snprintf(n, sizeof n, "%lld", written);
        answer_error(id, "written", n);
    } else if (strcmp(mode, "chatty") == 0) {
        static char junk[65536];
        memset(junk, 'e', sizeof junk);
        for (int i = 0; i < 16; i++) {
            size_t off = 0;
            while (off < sizeof junk) {
                ssize_t w = write(2, junk + off, sizeof junk - off);
                if (w <= 0) return 3;
                off += (size_t)w;
            }
        }
        answer(id, "");
        pause();
    }
    return 1;
}
