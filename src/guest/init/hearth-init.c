/*
 * hearth-init: PID 1 inside every Hearth microVM.
 *
 * Started by the initramfs (stage1.sh) with switch_root, from /run/hearth/init on a tmpfs, so nothing
 * in the image's root filesystem is changed. Statically linked: images with another libc, or with no
 * shell at all, still boot.
 *
 * It mounts the kernel filesystems, configures the network and hostname from the kernel command
 * line (hearth.ip=, hearth.gw=, hearth.mtu=, hearth.hostname=, hearth.dns=), covers /etc/hosts,
 * /etc/resolv.conf and /etc/machine-id with its own (as container runtimes do), starts
 * qemu-guest-agent (bundled under /run/hearth/agent with its own loader and libraries), runs the workload with its
 * argv/env/cwd/user and its stdout/stderr on the console, reaps zombies, forwards signals to the
 * workload, and serves the host's control port (virtio-serial "org.hearth.ctl.0"), which applies
 * restore hygiene after a snapshot restore (wall clock, RNG reseed, identity) and freezes and thaws
 * the filesystems around a suspend.
 *
 * The workload comes from /run/hearth/workload.cfg (appended to the initramfs per boot): a sequence
 * of NUL-terminated strings taken in pairs (key, value); keys: arg (repeated, in order), env
 * (repeated, "NAME=value"), cwd, user ("uid[:gid]" or "name[:group]"), on-exit ("keep" |
 * "poweroff"), and hostname, ip, gateway, mtu (which the kernel command line overrides).
 *
 * Control protocol, one line per request and per reply (both end with '\n', at most 4095 bytes):
 *   "<id> ping"                                        -> "<id> ok pong"
 *   "<id> fixup <realtime_ns> <entropy_hex> <hostname> <machine_id> [thaw]"
 *                                                      -> "<id> ok" | "<id> err <message>"
 *   "<id> freeze"                                      -> "<id> ok <count>" (FIFREEZE every writable fs)
 *   "<id> thaw"                                        -> "<id> ok <count>"
 *   "<id> status"                                      -> "<id> ok running <pid>" | "<id> ok exited <code>"
 *   "<id> poweroff <grace_ms>"                         -> "<id> ok", then the VM powers off
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CFG_PATH "/run/hearth/workload.cfg"
#define AGENT_DIR "/run/hearth/agent"
#define AGENT_STATE_DIR "/run/hearth/agent-state"
#define GA_PORT_NAME "org.qemu.guest_agent.0"
#define CTL_PORT_NAME "org.hearth.ctl.0"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_ITEMS 512
#define LINE_MAX_BYTES 4096
#define AGENT_RESTART_DELAY_MS 1000

extern char **environ;

struct config {
  char *argv[MAX_ITEMS + 1];
  int argc;
  char *envp[MAX_ITEMS + 2];
  int envc;
  const char *cwd;
  const char *user;
  const char *hostname;
  const char *ip;
  const char *gateway;
  const char *dns;
  int mtu;
  int poweroff_on_exit;
};

static struct config cfg;
static pid_t workload_pid = -1;
static int workload_exited = 0;
static int workload_status = 0;
static pid_t agent_pid = -1;
static long long agent_restart_at_ms = -1;
static char ga_port[300];
static char ctl_port[300];
static int ctl_fd = -1;
static int ctl_hup = 0;
static char ctl_buf[LINE_MAX_BYTES];
static size_t ctl_len = 0;

static void logmsg(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof(buf) - 2) n = sizeof(buf) - 2;
  buf[n++] = '\n';
  int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) fd = 2;
  ssize_t w = write(fd, "hearth-init: ", 13);
  w = write(fd, buf, (size_t)n);
  (void)w;
  if (fd != 2) close(fd);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void mount_if_needed(const char *src, const char *target, const char *type, unsigned long flags,
                            const char *data) {
  mkdir(target, 0755);
  if (mount(src, target, type, flags, data) != 0 && errno != EBUSY)
    logmsg("mount %s on %s failed: %s", type, target, strerror(errno));
}

/* ---- configuration ---- */

static char *read_file(const char *path, size_t *len_out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap + 1);
  for (;;) {
    if (len == cap) {
      cap *= 2;
      buf = realloc(buf, cap + 1);
    }
    ssize_t r = read(fd, buf + len, cap - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    len += (size_t)r;
  }
  close(fd);
  buf[len] = 0;
  *len_out = len;
  return buf;
}

static int load_config(void) {
  size_t len = 0;
  char *buf = read_file(CFG_PATH, &len);
  if (!buf) {
    logmsg("cannot read %s: %s", CFG_PATH, strerror(errno));
    return -1;
  }
  char *p = buf, *end = buf + len;
  while (p < end) {
    char *key = p;
    p += strlen(p) + 1;
    if (p > end) break;
    char *val = p;
    p += strlen(p) + 1;
    if (p > end + 1) break;
    if (!strcmp(key, "arg") && cfg.argc < MAX_ITEMS) cfg.argv[cfg.argc++] = val;
    else if (!strcmp(key, "env") && cfg.envc < MAX_ITEMS) cfg.envp[cfg.envc++] = val;
    else if (!strcmp(key, "cwd")) cfg.cwd = val;
    else if (!strcmp(key, "user")) cfg.user = val;
    else if (!strcmp(key, "hostname")) cfg.hostname = val;
    else if (!strcmp(key, "ip")) cfg.ip = val;
    else if (!strcmp(key, "gateway")) cfg.gateway = val;
    else if (!strcmp(key, "mtu")) cfg.mtu = atoi(val);
    else if (!strcmp(key, "on-exit")) cfg.poweroff_on_exit = !strcmp(val, "poweroff");
    else logmsg("ignoring unknown config key '%s'", key);
  }
  cfg.argv[cfg.argc] = NULL;
  return 0;
}

/* Network and hostname come from the kernel command line (hearth.ip=a.b.c.d/prefix, hearth.gw=,
 * hearth.mtu=, hearth.hostname=); they override workload.cfg's values of the same meaning. */
static void load_cmdline(void) {
  size_t len = 0;
  char *buf = read_file("/proc/cmdline", &len);
  if (!buf) return;
  char *save = NULL;
  for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
    if (!strncmp(tok, "hearth.ip=", 10)) cfg.ip = tok + 10;
    else if (!strncmp(tok, "hearth.gw=", 10)) cfg.gateway = tok + 10;
    else if (!strncmp(tok, "hearth.mtu=", 11)) cfg.mtu = atoi(tok + 11);
    else if (!strncmp(tok, "hearth.hostname=", 16)) cfg.hostname = tok + 16;
    else if (!strncmp(tok, "hearth.dns=", 11)) cfg.dns = tok + 11;
  }
}

/* ---- /etc/hosts and /etc/resolv.conf ---- */

/* Writes `text` to `path` (on Hearth's tmpfs) in one go. */
static int write_text(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

static void write_hosts(const char *hostname) {
  char text[512];
  snprintf(text, sizeof(text), "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n",
           hostname ? hostname : "localhost");
  if (write_text("/run/hearth/hosts", text) < 0) logmsg("cannot write /run/hearth/hosts: %s", strerror(errno));
}

/* The image's machine-id, if it has one, copied to /run/hearth/machine-id (covered next). */
static void copy_machine_id(void) {
  char id[34] = "";
  int fd = open("/etc/machine-id", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, id, 33);
    close(fd);
    id[n == 33 && id[32] == '\n' ? 33 : 0] = 0;
  }
  if (write_text("/run/hearth/machine-id", id) < 0) logmsg("cannot write /run/hearth/machine-id");
}

/* Like a container runtime: the image's /etc/hosts, /etc/resolv.conf and /etc/machine-id are
 * covered (bind mounts) by files Hearth keeps on its tmpfs, so the guest resolves its own name
 * without DNS and asks the resolver Hearth provides, never one baked into the image, and restore
 * hygiene sets the machine-id in memory rather than through the disk. Nothing on the image's disk
 * changes (a missing file is created empty, as the mount point). */
static void setup_name_resolution(void) {
  char text[256];
  write_hosts(cfg.hostname);
  snprintf(text, sizeof(text), "nameserver %s\noptions timeout:2 attempts:1\n", cfg.dns ? cfg.dns : "127.0.0.1");
  if (write_text("/run/hearth/resolv.conf", text) < 0) logmsg("cannot write /run/hearth/resolv.conf");
  copy_machine_id();
  const char *files[][2] = {{"/run/hearth/hosts", "/etc/hosts"},
                            {"/run/hearth/resolv.conf", "/etc/resolv.conf"},
                            {"/run/hearth/machine-id", "/etc/machine-id"}};
  for (int i = 0; i < 3; i++) {
    struct stat st;
    if (lstat("/etc", &st) < 0 || !S_ISDIR(st.st_mode)) return;
    if (lstat(files[i][1], &st) < 0) {
      int fd = open(files[i][1], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (fd >= 0) close(fd);
    } else if (!S_ISREG(st.st_mode)) {
      unlink(files[i][1]); /* a symlink (e.g. to systemd-resolved's file) or other non-file */
      int fd = open(files[i][1], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (fd >= 0) close(fd);
    }
    if (mount(files[i][0], files[i][1], NULL, MS_BIND, NULL) < 0)
      logmsg("cannot bind %s over %s: %s", files[i][0], files[i][1], strerror(errno));
  }
}

static int env_has(const char *name) {
  size_t n = strlen(name);
  for (int i = 0; i < cfg.envc; i++)
    if (!strncmp(cfg.envp[i], name, n) && cfg.envp[i][n] == '=') return 1;
  return 0;
}

/* ---- network ---- */

static int set_if_flags(int sock, const char *ifname, short set) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) return -1;
  ifr.ifr_flags |= set;
  return ioctl(sock, SIOCSIFFLAGS, &ifr);
}

static int set_sockaddr(struct sockaddr *sa, const char *addr) {
  struct sockaddr_in *sin = (struct sockaddr_in *)sa;
  memset(sin, 0, sizeof(*sin));
  sin->sin_family = AF_INET;
  return inet_pton(AF_INET, addr, &sin->sin_addr) == 1 ? 0 : -1;
}

static void configure_network(void) {
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return;
  if (set_if_flags(sock, "lo", IFF_UP) < 0) logmsg("lo up: %s", strerror(errno));
  if (cfg.ip) {
    char addr[64];
    int prefix = 32;
    snprintf(addr, sizeof(addr), "%s", cfg.ip);
    char *slash = strchr(addr, '/');
    if (slash) {
      *slash = 0;
      prefix = atoi(slash + 1);
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    if (set_sockaddr(&ifr.ifr_addr, addr) < 0 || ioctl(sock, SIOCSIFADDR, &ifr) < 0)
      logmsg("eth0 address %s: %s", cfg.ip, strerror(errno));
    uint32_t mask = prefix <= 0 ? 0 : htonl(0xffffffffu << (32 - prefix));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_netmask;
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = mask;
    if (ioctl(sock, SIOCSIFNETMASK, &ifr) < 0) logmsg("eth0 netmask: %s", strerror(errno));
    if (cfg.mtu > 0) {
      ifr.ifr_mtu = cfg.mtu;
      if (ioctl(sock, SIOCSIFMTU, &ifr) < 0) logmsg("eth0 mtu: %s", strerror(errno));
    }
    /* The VM's network is IPv4 only (its host side has IPv6 off). Without IPv6 on eth0 the guest
     * neither solicits routers (with backoff, for ever) nor sends MLD reports and neighbour
     * discovery: an idle guest transmits nothing. IPv6 sockets still work: a [::] listener accepts
     * IPv4 connections, and lo keeps ::1. Absent on a kernel without IPv6, which is fine. */
    int v6 = open("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", O_WRONLY | O_CLOEXEC);
    if (v6 >= 0) {
      if (write(v6, "1\n", 2) != 2) logmsg("eth0 ipv6 off: %s", strerror(errno));
      close(v6);
    } else if (errno != ENOENT) {
      logmsg("eth0 ipv6 off: %s", strerror(errno));
    }
    if (set_if_flags(sock, "eth0", IFF_UP | IFF_RUNNING) < 0) logmsg("eth0 up: %s", strerror(errno));
    if (cfg.gateway) {
      struct rtentry rt;
      memset(&rt, 0, sizeof(rt));
      set_sockaddr(&rt.rt_dst, "0.0.0.0");
      set_sockaddr(&rt.rt_genmask, "0.0.0.0");
      if (set_sockaddr(&rt.rt_gateway, cfg.gateway) == 0) {
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        rt.rt_dev = "eth0";
        if (ioctl(sock, SIOCADDRT, &rt) < 0) logmsg("default route: %s", strerror(errno));
      }
    }
  }
  close(sock);
}

/* ---- users ---- */

/* Splits an /etc/passwd- or /etc/group-style line (newline stripped) at ':' into at most `max`
 * fields, in place; returns how many. */
static int split_colon_line(char *line, char **fields, int max) {
  line[strcspn(line, "\n")] = 0;
  int n = 0;
  char *s = line;
  fields[n++] = s;
  while (n < max && (s = strchr(s, ':'))) {
    *s++ = 0;
    fields[n++] = s;
  }
  return n;
}

/* Looks a name up in an /etc/passwd- or /etc/group-style file of the image; returns the line's
 * fields split in place, or 0 when absent. */
static int lookup_colon_file(const char *path, const char *name, char *line, size_t cap, char **fields,
                             int nfields) {
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  int found = 0;
  while (fgets(line, (int)cap, f)) {
    if (split_colon_line(line, fields, nfields) >= 3 && !strcmp(fields[0], name)) {
      found = 1;
      break;
    }
  }
  fclose(f);
  return found;
}

static int all_digits(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!isdigit((unsigned char)*s)) return 0;
  return 1;
}

/* Resolves cfg.user into ids the way container runtimes do: names through the image's own
 * /etc/passwd and /etc/group, supplementary groups from /etc/group. */
static int resolve_user(uid_t *uid, gid_t *gid, gid_t *groups, int *ngroups, const char **home) {
  char spec[256], line[1024];
  char *f[8];
  *uid = 0;
  *gid = 0;
  *ngroups = 0;
  *home = "/root";
  if (!cfg.user || !*cfg.user) return 0;
  snprintf(spec, sizeof(spec), "%s", cfg.user);
  char *group = strchr(spec, ':');
  if (group) *group++ = 0;
  const char *username = NULL;
  if (all_digits(spec)) {
    *uid = (uid_t)strtoul(spec, NULL, 10);
    *home = "/";
    FILE *pf = fopen("/etc/passwd", "re");
    if (pf) {
      while (fgets(line, sizeof(line), pf)) {
        if (split_colon_line(line, f, 7) >= 6 && (uid_t)strtoul(f[2], NULL, 10) == *uid) {
          *gid = (gid_t)strtoul(f[3], NULL, 10);
          *home = strdup(f[5]);
          username = strdup(f[0]);
          break;
        }
      }
      fclose(pf);
    }
  } else {
    if (!lookup_colon_file("/etc/passwd", spec, line, sizeof(line), f, 7)) {
      logmsg("user '%s' not found in the image's /etc/passwd", spec);
      return -1;
    }
    *uid = (uid_t)strtoul(f[2], NULL, 10);
    *gid = (gid_t)strtoul(f[3], NULL, 10);
    *home = f[5] ? strdup(f[5]) : "/";
    username = strdup(spec);
  }
  if (group) {
    if (all_digits(group)) {
      *gid = (gid_t)strtoul(group, NULL, 10);
    } else {
      if (!lookup_colon_file("/etc/group", group, line, sizeof(line), f, 4)) {
        logmsg("group '%s' not found in the image's /etc/group", group);
        return -1;
      }
      *gid = (gid_t)strtoul(f[2], NULL, 10);
    }
  }
  groups[(*ngroups)++] = *gid;
  if (username) {
    FILE *gf = fopen("/etc/group", "re");
    if (gf) {
      while (fgets(line, sizeof(line), gf) && *ngroups < 64) {
        if (split_colon_line(line, f, 4) < 4) continue;
        for (char *m = strtok(f[3], ","); m; m = strtok(NULL, ","))
          if (!strcmp(m, username)) groups[(*ngroups)++] = (gid_t)strtoul(f[2], NULL, 10);
      }
      fclose(gf);
    }
  }
  return 0;
}

/* ---- processes ---- */

static void redirect_stdio_to_console(void) {
  int in = open("/dev/null", O_RDONLY);
  int out = open("/dev/console", O_WRONLY | O_NOCTTY);
  if (in >= 0) dup2(in, 0);
  if (out >= 0) {
    dup2(out, 1);
    dup2(out, 2);
  }
  if (in > 2) close(in);
  if (out > 2) close(out);
}

static void reset_signals_in_child(void) {
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
}

static void start_workload(void) {
  if (cfg.argc == 0) {
    logmsg("no workload command configured; only the agent runs");
    return;
  }
  uid_t uid;
  gid_t gid;
  gid_t groups[65];
  int ngroups;
  const char *home;
  if (resolve_user(&uid, &gid, groups, &ngroups, &home) < 0) {
    workload_exited = 1;
    workload_status = 126;
    return;
  }
  if (!env_has("PATH")) cfg.envp[cfg.envc++] = "PATH=" DEFAULT_PATH;
  if (!env_has("HOME")) {
    char *h = malloc(strlen(home) + 6);
    sprintf(h, "HOME=%s", home);
    cfg.envp[cfg.envc++] = h;
  }
  cfg.envp[cfg.envc] = NULL;
  pid_t pid = fork();
  if (pid < 0) {
    logmsg("fork: %s", strerror(errno));
    return;
  }
  if (pid == 0) {
    reset_signals_in_child();
    setsid();
    redirect_stdio_to_console();
    if (cfg.cwd && chdir(cfg.cwd) < 0) {
      logmsg("workload: chdir %s: %s", cfg.cwd, strerror(errno));
      _exit(126);
    }
    if (setgroups((size_t)ngroups, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
      logmsg("workload: cannot switch to user %s: %s", cfg.user, strerror(errno));
      _exit(126);
    }
    environ = cfg.envp;
    execvp(cfg.argv[0], cfg.argv);
    logmsg("workload: cannot execute %s: %s", cfg.argv[0], strerror(errno));
    _exit(127);
  }
  workload_pid = pid;
  logmsg("workload started (pid %d): %s", pid, cfg.argv[0]);
}

static void start_agent(void) {
  agent_restart_at_ms = -1;
  if (!ga_port[0]) return;
  pid_t pid = fork();
  if (pid < 0) return;
  if (pid == 0) {
    reset_signals_in_child();
    redirect_stdio_to_console();
    static char *envp[] = {"PATH=" DEFAULT_PATH, "HOME=/root", NULL};
    char *argv[] = {AGENT_DIR "/ld-linux-x86-64.so.2",
                    "--library-path",
                    AGENT_DIR,
                    AGENT_DIR "/qemu-ga",
                    "--method=virtio-serial",
                    "--path",
                    ga_port,
                    "--statedir=" AGENT_STATE_DIR,
                    "--pidfile=" AGENT_STATE_DIR "/qemu-ga.pid",
                    "--retry-path",
                    NULL};
    execve(argv[0], argv, envp);
    logmsg("cannot execute qemu-ga: %s", strerror(errno));
    _exit(127);
  }
  agent_pid = pid;
}

static void reap_children(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    if (pid == workload_pid) {
      workload_exited = 1;
      workload_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      workload_pid = -1;
      logmsg("workload exited with status %d", workload_status);
      if (cfg.poweroff_on_exit) {
        sync();
        reboot(RB_POWER_OFF);
      }
    } else if (pid == agent_pid) {
      agent_pid = -1;
      logmsg("qemu-ga exited (status %d); restarting", status);
      agent_restart_at_ms = now_ms() + AGENT_RESTART_DELAY_MS;
    }
  }
}

static void forward_signal(int sig) {
  if (workload_pid > 0) kill(-workload_pid, sig);
}

/* ---- virtio-serial ports ---- */

static void find_ports(void) {
  DIR *d = opendir("/sys/class/virtio-ports");
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[PATH_MAX], name[128];
    snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t n = read(fd, name, sizeof(name) - 1);
    close(fd);
    if (n <= 0) continue;
    name[n] = 0;
    name[strcspn(name, "\n")] = 0;
    if (!strcmp(name, GA_PORT_NAME)) snprintf(ga_port, sizeof(ga_port), "/dev/%s", e->d_name);
    if (!strcmp(name, CTL_PORT_NAME)) snprintf(ctl_port, sizeof(ctl_port), "/dev/%s", e->d_name);
  }
  closedir(d);
}

static void open_ctl(void) {
  if (!ctl_port[0]) return;
  ctl_fd = open(ctl_port, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (ctl_fd < 0) {
    logmsg("cannot open control port %s: %s", ctl_port, strerror(errno));
    return;
  }
  /* The port reports POLLHUP while no host is connected; SIGIO tells us when one connects. */
  fcntl(ctl_fd, F_SETOWN, getpid());
  fcntl(ctl_fd, F_SETFL, fcntl(ctl_fd, F_GETFL) | O_ASYNC);
}

static void ctl_reply(const char *id, const char *fmt, ...) {
  char buf[LINE_MAX_BYTES];
  int n = snprintf(buf, sizeof(buf), "%s ", id);
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof(buf) - 2) n = sizeof(buf) - 2;
  buf[n++] = '\n';
  size_t off = 0;
  long long deadline = now_ms() + 1000;
  while (off < (size_t)n && now_ms() < deadline) {
    ssize_t w = write(ctl_fd, buf + off, (size_t)n - off);
    if (w > 0) off += (size_t)w;
    else if (w < 0 && errno != EAGAIN && errno != EINTR) return;
    else {
      struct pollfd p = {.fd = ctl_fd, .events = POLLOUT};
      poll(&p, 1, 50);
    }
  }
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int reseed_rng(const char *hex) {
  size_t len = strlen(hex) / 2;
  if (len == 0 || len > 512) return -1;
  struct {
    int entropy_count;
    int buf_size;
    unsigned char buf[512];
  } info;
  for (size_t i = 0; i < len; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    info.buf[i] = (unsigned char)(hi << 4 | lo);
  }
  info.entropy_count = (int)len * 8;
  info.buf_size = (int)len;
  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = ioctl(fd, RNDADDENTROPY, &info);
  if (rc == 0) rc = ioctl(fd, RNDRESEEDCRNG);
  close(fd);
  return rc;
}

/* Writes the machine id unless the file already holds it (a resume keeps its identity, and must
 * not write to a filesystem that may still be frozen). /etc/machine-id is normally the tmpfs file
 * bound over it at boot, so it already holds the id; it is written itself only in guests booted
 * before that bind mount existed. */
static int write_machine_id(const char *id) {
  char line[40], cur[40];
  if (strlen(id) != 32) return -1;
  for (const char *p = id; *p; p++)
    if (hexval(*p) < 0) return -1;
  snprintf(line, sizeof(line), "%s\n", id);
  int ok = 0;
  const char *paths[] = {"/run/hearth/machine-id", "/etc/machine-id"};
  for (int i = 0; i < 2; i++) {
    if (i == 1 && access("/etc", W_OK) != 0) break;
    int rfd = open(paths[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (rfd >= 0) {
      ssize_t n = read(rfd, cur, 33);
      close(rfd);
      if (n == 33 && !memcmp(cur, line, 33)) {
        ok++;
        continue;
      }
    }
    int fd = open(paths[i], O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0444);
    if (fd < 0) continue;
    if (write(fd, line, 33) == 33) ok++;
    close(fd);
  }
  return ok > 0 ? 0 : -1;
}

/* ---- filesystem freeze ---- */

static const char *const NOT_FREEZABLE[] = {"proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "ramfs", "cgroup",
                                            "cgroup2", "mqueue", "debugfs", "tracefs", "securityfs", "pstore",
                                            "bpf", "hugetlbfs", "configfs", "fusectl", "autofs", "binfmt_misc",
                                            "rpc_pipefs", "nsfs", "overlay", "squashfs", "iso9660", NULL};

/* Decodes the octal escapes (\040 for a space) of a /proc/mounts field, in place. */
static void unescape_mount_field(char *s) {
  char *w = s;
  for (char *r = s; *r; r++) {
    if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
      *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
      r += 3;
    } else *w++ = *r;
  }
  *w = 0;
}

/* Collects writable, freezable mount points (in mount order) into paths; returns their count. */
static int freezable_mounts(char paths[][PATH_MAX], int max) {
  FILE *f = fopen("/proc/self/mounts", "re");
  if (!f) return -1;
  char line[PATH_MAX * 2];
  int n = 0;
  while (n < max && fgets(line, sizeof(line), f)) {
    char *save = NULL;
    strtok_r(line, " ", &save);
    char *dir = strtok_r(NULL, " ", &save);
    char *type = strtok_r(NULL, " ", &save);
    char *opts = strtok_r(NULL, " ", &save);
    if (!dir || !type || !opts || strncmp(opts, "rw", 2) != 0 || (opts[2] != ',' && opts[2] != 0)) continue;
    int skip = 0;
    for (int i = 0; NOT_FREEZABLE[i]; i++)
      if (!strcmp(type, NOT_FREEZABLE[i])) skip = 1;
    if (skip) continue;
    unescape_mount_field(dir);
    snprintf(paths[n++], PATH_MAX, "%s", dir);
  }
  fclose(f);
  return n;
}

#define MAX_FREEZE 64

/* FITHAW on every freezable mount; a filesystem that is not frozen is not an error. */
static int thaw_all(void) {
  static char paths[MAX_FREEZE][PATH_MAX];
  int n = freezable_mounts(paths, MAX_FREEZE), thawed = 0;
  for (int i = 0; i < n; i++) {
    int fd = open(paths[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    if (ioctl(fd, FITHAW, 0) == 0) thawed++;
    close(fd);
  }
  return thawed;
}

/* FIFREEZE on every freezable mount, innermost first: when it returns, every write the guest
 * completed is on the disks and the filesystems are clean. On failure, thaws what it froze. */
static int freeze_all(char *err, size_t errlen) {
  static char paths[MAX_FREEZE][PATH_MAX];
  int n = freezable_mounts(paths, MAX_FREEZE), frozen = 0;
  if (n < 0) {
    snprintf(err, errlen, "cannot read /proc/self/mounts: %s", strerror(errno));
    return -1;
  }
  for (int i = n - 1; i >= 0; i--) {
    int fd = open(paths[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    int rc = ioctl(fd, FIFREEZE, 0);
    int e = errno;
    close(fd);
    if (rc == 0) frozen++;
    else if (e != EOPNOTSUPP && e != EBUSY && e != ENOTTY) {
      snprintf(err, errlen, "freeze %s: %s", paths[i], strerror(e));
      thaw_all();
      return -1;
    }
  }
  return frozen;
}

static void ctl_handle(char *line) {
  char *save = NULL;
  char *id = strtok_r(line, " ", &save);
  char *cmd = strtok_r(NULL, " ", &save);
  if (!id || !cmd) return;
  if (!strcmp(cmd, "ping")) {
    ctl_reply(id, "ok pong");
  } else if (!strcmp(cmd, "status")) {
    if (workload_exited) ctl_reply(id, "ok exited %d", workload_status);
    else if (workload_pid > 0) ctl_reply(id, "ok running %d", workload_pid);
    else ctl_reply(id, "ok none");
  } else if (!strcmp(cmd, "freeze")) {
    char err[256];
    int n = freeze_all(err, sizeof(err));
    if (n < 0) ctl_reply(id, "err %s", err);
    else ctl_reply(id, "ok %d", n);
  } else if (!strcmp(cmd, "thaw")) {
    ctl_reply(id, "ok %d", thaw_all());
  } else if (!strcmp(cmd, "fixup")) {
    char *ns = strtok_r(NULL, " ", &save);
    char *entropy = strtok_r(NULL, " ", &save);
    char *host = strtok_r(NULL, " ", &save);
    char *mid = strtok_r(NULL, " ", &save);
    char *flags = strtok_r(NULL, " ", &save);
    if (!ns || !entropy || !host || !mid) {
      ctl_reply(id, "err usage: fixup <realtime_ns> <entropy_hex> <hostname> <machine_id> [thaw]");
      return;
    }
    if (flags && !strcmp(flags, "thaw")) thaw_all();
    long long t = strtoll(ns, NULL, 10);
    struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
      ctl_reply(id, "err clock_settime: %s", strerror(errno));
      return;
    }
    if (reseed_rng(entropy) < 0) {
      ctl_reply(id, "err rng reseed failed: %s", strerror(errno));
      return;
    }
    if (sethostname(host, strlen(host)) < 0) {
      ctl_reply(id, "err sethostname: %s", strerror(errno));
      return;
    }
    write_hosts(host);
    if (write_machine_id(mid) < 0) {
      ctl_reply(id, "err machine-id: invalid or not writable");
      return;
    }
    ctl_reply(id, "ok");
  } else if (!strcmp(cmd, "poweroff")) {
    char *grace = strtok_r(NULL, " ", &save);
    long long grace_ms = grace ? atoll(grace) : 5000;
    ctl_reply(id, "ok");
    forward_signal(SIGTERM);
    long long deadline = now_ms() + grace_ms;
    while (workload_pid > 0 && now_ms() < deadline) {
      usleep(10000);
      reap_children();
    }
    if (workload_pid > 0) kill(-workload_pid, SIGKILL);
    sync();
    reboot(RB_POWER_OFF);
  } else {
    ctl_reply(id, "err unknown command '%s'", cmd);
  }
}

static void ctl_read(void) {
  for (;;) {
    ssize_t r = read(ctl_fd, ctl_buf + ctl_len, sizeof(ctl_buf) - 1 - ctl_len);
    if (r <= 0) return;
    ctl_len += (size_t)r;
    char *nl;
    while ((nl = memchr(ctl_buf, '\n', ctl_len))) {
      *nl = 0;
      ctl_handle(ctl_buf);
      size_t used = (size_t)(nl - ctl_buf) + 1;
      memmove(ctl_buf, ctl_buf + used, ctl_len - used);
      ctl_len -= used;
    }
    if (ctl_len == sizeof(ctl_buf) - 1) ctl_len = 0; /* an over-long line is dropped */
  }
}

int main(void) {
  if (getpid() != 1) {
    fprintf(stderr, "hearth-init must run as PID 1\n");
    return 2;
  }
  mount_if_needed("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount_if_needed("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount_if_needed("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  mount_if_needed("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666");
  mount_if_needed("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mkdir(AGENT_STATE_DIR, 0700);
  reboot(RB_DISABLE_CAD);

  load_config();
  load_cmdline();
  if (cfg.hostname && sethostname(cfg.hostname, strlen(cfg.hostname)) < 0)
    logmsg("sethostname: %s", strerror(errno));
  configure_network();
  setup_name_resolution();

  sigset_t mask;
  sigemptyset(&mask);
  int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGIO, SIGPWR};
  for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) sigaddset(&mask, sigs[i]);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

  find_ports();
  start_agent();
  open_ctl();
  start_workload();
  logmsg("ready");

  for (;;) {
    struct pollfd fds[2];
    int nfds = 0;
    fds[nfds++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    if (ctl_fd >= 0 && !ctl_hup) fds[nfds++] = (struct pollfd){.fd = ctl_fd, .events = POLLIN};
    int timeout = -1;
    if (agent_restart_at_ms >= 0) {
      long long wait = agent_restart_at_ms - now_ms();
      timeout = wait < 0 ? 0 : (int)wait;
    }
    /* While no host is connected the port keeps reporting POLLHUP; look again every second in case
     * a SIGIO for the connection was missed. */
    if (ctl_hup && (timeout < 0 || timeout > 1000)) timeout = 1000;
    int n = poll(fds, (nfds_t)nfds, timeout);
    if (n < 0 && errno != EINTR) continue;
    if (agent_restart_at_ms >= 0 && now_ms() >= agent_restart_at_ms) start_agent();
    if (ctl_hup && n == 0) ctl_hup = 0;
    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
        int sig = (int)si.ssi_signo;
        if (sig == SIGCHLD) reap_children();
        else if (sig == SIGIO) ctl_hup = 0;
        else forward_signal(sig);
      }
    }
    if (nfds > 1) {
      if (fds[1].revents & POLLIN) ctl_read();
      else if (fds[1].revents & (POLLHUP | POLLERR)) ctl_hup = 1;
    }
  }
}
