// fcov: which functions of an executable run. Plants int3 at every function entry listed in
// OFFSETS (hex offsets from the executable's load base, one per line), runs PROG under ptrace
// (all threads), records each function the first time it is entered and removes its
// breakpoint. SIGTERM is sent to PROG after SECONDS (never when 0) or when fcov itself gets
// SIGTERM or SIGINT; hit offsets are written to OUT in order once PROG has exited.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_asked;
static void ask_stop(int sig) { (void)sig; stop_asked = 1; }
static unsigned long *offs; static unsigned char *orig; static char *hit; static size_t n;
static int cmp(const void *a, const void *b) { unsigned long x = *(unsigned long *)a, y = *(unsigned long *)b; return x < y ? -1 : x > y; }
static long find(unsigned long off) { size_t lo = 0, hi = n; while (lo < hi) { size_t m = (lo + hi) / 2; if (offs[m] == off) return m; if (offs[m] < off) lo = m + 1; else hi = m; } return -1; }

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: fcov OFFSETS OUT SECONDS PROG ARGS...\n"); return 2; }
    FILE *f = fopen(argv[1], "r"); size_t cap = 1 << 16; offs = malloc(cap * sizeof *offs);
    unsigned long o; while (fscanf(f, "%lx", &o) == 1) { if (n == cap) offs = realloc(offs, (cap *= 2) * sizeof *offs); offs[n++] = o; }
    fclose(f); qsort(offs, n, sizeof *offs, cmp);
    size_t u = 0; for (size_t i = 0; i < n; i++) if (!u || offs[u - 1] != offs[i]) offs[u++] = offs[i]; n = u;
    orig = malloc(n); hit = calloc(n, 1);
    FILE *out = fopen(argv[2], "w"); int seconds = atoi(argv[3]);
    pid_t child = fork();
    if (child == 0) { ptrace(PTRACE_TRACEME, 0, 0, 0); execv(argv[4], argv + 4); _exit(127); }
    int st; waitpid(child, &st, 0); // stopped at exec
    char path[64], exe[4096], line[8192]; snprintf(path, sizeof path, "/proc/%d/exe", child);
    ssize_t el = readlink(path, exe, sizeof exe - 1); exe[el] = 0;
    snprintf(path, sizeof path, "/proc/%d/maps", child); FILE *maps = fopen(path, "r"); unsigned long base = 0;
    while (fgets(line, sizeof line, maps)) { unsigned long lo, off; char p[4096] = ""; if (sscanf(line, "%lx-%*x %*s %lx %*s %*s %4095s", &lo, &off, p) >= 2 && off == 0 && !strcmp(p, exe)) { base = lo; break; } }
    fclose(maps);
    snprintf(path, sizeof path, "/proc/%d/mem", child); int mem = open(path, O_RDWR);
    unsigned char cc = 0xcc;
    for (size_t i = 0; i < n; i++) { pread(mem, &orig[i], 1, base + offs[i]); pwrite(mem, &cc, 1, base + offs[i]); }
    ptrace(PTRACE_SETOPTIONS, child, 0, PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL);
    signal(SIGTERM, ask_stop); signal(SIGINT, ask_stop);
    ptrace(PTRACE_CONT, child, 0, 0);
    time_t start = time(0); int alive = 1, termed = 0; size_t hits = 0;
    while (alive) {
        if (!termed && (stop_asked || (seconds > 0 && time(0) - start >= seconds))) { kill(child, SIGTERM); termed = 1; }
        pid_t t = waitpid(-1, &st, __WALL | WNOHANG);
        if (t == 0) { usleep(1000); continue; }
        if (t < 0) break;
        if (WIFEXITED(st) || WIFSIGNALED(st)) { if (t == child) alive = 0; continue; }
        if (!WIFSTOPPED(st)) continue;
        int sig = WSTOPSIG(st), deliver = 0;
        if (sig == SIGTRAP && (st >> 16) == 0) {
            struct user_regs_struct r; ptrace(PTRACE_GETREGS, t, 0, &r);
            long i = r.rip - 1 >= base ? find(r.rip - 1 - base) : -1;
            if (i >= 0) {
                if (!hit[i]) { hit[i] = 1; hits++; pwrite(mem, &orig[i], 1, base + offs[i]); fprintf(out, "%lx\n", offs[i]); }
                r.rip -= 1; ptrace(PTRACE_SETREGS, t, 0, &r);
            } else deliver = sig;
        } else if (sig == SIGTRAP || sig == SIGSTOP) {
            deliver = 0; // clone events and new threads' initial stop
        } else deliver = sig;
        ptrace(PTRACE_CONT, t, 0, deliver);
    }
    fclose(out); fprintf(stderr, "fcov: %zu of %zu functions ran\n", hits, n);
    return 0;
}
