/*
 * hearth-jailer: starts one program (QEMU) inside a jail. Modelled on Firecracker's jailer: the
 * VMM is the part of the stack that parses guest-controlled data, so if a guest ever escapes into
 * it, it should find an unprivileged process that sees almost nothing of the host.
 *
 * Usage:
 *   hearth-jailer [--netns PATH] --uid U --gid G [--cgroup-procs FILE]... --root DIR
 *                 [--ro PATH]... [--rw PATH]... [--dev PATH]... [--keep-fd N]... [--nofile N]
 *                 [--nproc N] [--fsize BYTES] [--hostname NAME] -- /abs/path/to/binary args...
 *
 * Steps, in order (a failing step prints "hearth-jailer: <step>: <strerror>" on stderr and exits
 * 125; nothing but the pid line is ever printed on stdout):
 *  1. Writes its own pid to each --cgroup-procs file (one per v1 hierarchy, or one on v2), so it
 *     and everything it forks are limited and accounted from the start.
 *  2. Enters the VM's network namespace (--netns): QEMU sees only the VM's tap device.
 *  3. unshare(mount, IPC, UTS, PID). This process stays in the old pid namespace; its next child
 *     becomes pid 1 of the new one.
 *  4. fork(). The parent prints "pid <host pid of the child>\n", points stdout at /dev/null, forwards
 *     TERM/INT/HUP/QUIT/USR1/USR2 to the child and exits with the child's exit code (128+signal if
 *     it was killed). The caller can treat the parent as the jailed process.
 *  5. The child builds a root on a tmpfs at --root: /dev holding only the --dev nodes (made with
 *     mknod, same type, numbers and mode as on the host, owned by --uid/--gid, as Firecracker's
 *     jailer does, so that e.g. a root:kvm 0660 /dev/kvm is usable after the uid drop), a /proc of
 *     its own pid namespace, a tmpfs /tmp, then the --ro/--rw bind mounts (always nosuid,nodev),
 *     then the host's merged-/usr symlinks (/bin -> usr/bin...). It pivot_root()s into it, detaches
 *     the host's tree and makes / read-only.
 *  6. It sets the hostname and rlimits, drops to --uid/--gid (no supplementary groups, so no
 *     capabilities left), sets no_new_privs, closes every fd above 2 but the --keep-fd ones (e.g. a
 *     sealed memfd the program maps) and execs the program.
 *
 * Notes:
 *  - The child is pid 1 of its pid namespace: it runs the program directly (no extra init), and
 *    when it exits the namespace ends. The kernel delivers a signal sent to a namespace's pid 1
 *    only if pid 1 handles that signal. SIGKILL and SIGSTOP are the exception. QEMU handles TERM,
 *    INT and HUP.
 *  - If the parent dies, the child gets SIGKILL (PR_SET_PDEATHSIG). A pipe whose write end only
 *    the parent holds catches a parent that died before the prctl. The child reads one byte from
 *    it; EOF means the parent is gone. The byte also makes the child wait until the pid line has
 *    been printed, so the program's output always comes after that line.
 *  - The parent shares the jail's mount namespace, so pivot_root() moves its root too. It opens
 *    /dev/null before fork() and touches no file after it.
 *  - /dev, /proc and /tmp are mounted before the bind mounts so that binds below /tmp or /dev are
 *    not hidden. A recursive bind is made read-only at its top mount only; mounts below it keep
 *    their own flags. The program inherits the environment unchanged; the caller controls it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_SETUP 125
#define EXIT_EXEC 127

struct bind { const char *path; int rw; };

struct opts {
	const char *netns, *root, *hostname;
	unsigned long long uid, gid, nofile, nproc, fsize; /* 0 = not given (uid/gid must be > 0) */
	const char **cgroup_procs, **devs;
	struct bind *binds;
	int *keep_fds;
	int n_cgroup_procs, n_devs, n_binds, n_keep_fds;
	char **argv; /* the program and its arguments */
};

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };
#define N_FORWARDED ((int)(sizeof forwarded / sizeof forwarded[0]))
static volatile sig_atomic_t child_pid;

/* "hearth-jailer: <step>: <strerror>" on stderr, exit 125. `fmt` names the step. */
static void die(const char *fmt, ...)
{
	int err = errno;
	va_list ap;
	va_start(ap, fmt);
	fputs("hearth-jailer: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", strerror(err));
	_exit(EXIT_SETUP);
}

static void usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("hearth-jailer: usage: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	_exit(EXIT_SETUP);
}

static unsigned long long number(const char *opt, const char *s, unsigned long long max)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *s < '0' || *s > '9' || *end || v == 0 || v > max)
		usage("%s needs an integer in 1..%llu, not '%s'", opt, max, s);
	return v;
}

/* Absolute and normalised (no "//", "/./", "/../", trailing "/", "/." or "/.."), and not "/". */
static const char *path_arg(const char *opt, const char *p)
{
	size_t n = strlen(p);
	if (p[0] != '/' || n < 2 || n >= PATH_MAX - 256 || p[n - 1] == '/' || strstr(p, "//") ||
	    strstr(p, "/./") || strstr(p, "/../") || strcmp(p + n - 2, "/.") == 0 ||
	    (n >= 3 && strcmp(p + n - 3, "/..") == 0))
		usage("%s needs an absolute, normalised path, not '%s'", opt, p);
	return p;
}

static void parse(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof *o);
	o->cgroup_procs = calloc(argc, sizeof *o->cgroup_procs);
	o->devs = calloc(argc, sizeof *o->devs);
	o->binds = calloc(argc, sizeof *o->binds);
	o->keep_fds = calloc(argc, sizeof *o->keep_fds);
	if (!o->cgroup_procs || !o->devs || !o->binds || !o->keep_fds)
		die("calloc");
	int i;
	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
		const char *opt = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage("%s needs a value", opt);
		if (!strcmp(opt, "--netns")) o->netns = path_arg(opt, v);
		else if (!strcmp(opt, "--uid")) o->uid = number(opt, v, 4294967294ULL);
		else if (!strcmp(opt, "--gid")) o->gid = number(opt, v, 4294967294ULL);
		else if (!strcmp(opt, "--cgroup-procs")) o->cgroup_procs[o->n_cgroup_procs++] = path_arg(opt, v);
		else if (!strcmp(opt, "--root")) o->root = path_arg(opt, v);
		else if (!strcmp(opt, "--ro") || !strcmp(opt, "--rw")) {
			o->binds[o->n_binds].path = path_arg(opt, v);
			o->binds[o->n_binds++].rw = opt[3] == 'w';
		} else if (!strcmp(opt, "--dev")) {
			if (strncmp(path_arg(opt, v), "/dev/", 5) != 0)
				usage("--dev paths must be below /dev/, not '%s'", v);
			o->devs[o->n_devs++] = v;
		} else if (!strcmp(opt, "--keep-fd")) {
			int fd = (int)number(opt, v, 1 << 20);
			if (fd < 3 || fcntl(fd, F_GETFD) < 0)
				usage("--keep-fd needs an open descriptor >= 3, not '%s'", v);
			o->keep_fds[o->n_keep_fds++] = fd;
		} else if (!strcmp(opt, "--nofile")) o->nofile = number(opt, v, 1ULL << 30);
		else if (!strcmp(opt, "--nproc")) o->nproc = number(opt, v, 1ULL << 30);
		else if (!strcmp(opt, "--fsize")) o->fsize = number(opt, v, 1ULL << 62);
		else if (!strcmp(opt, "--hostname")) o->hostname = v;
		else
			usage("unknown option '%s'", opt);
	}
	if (i >= argc || i + 1 >= argc || argv[i + 1][0] != '/')
		usage("expected -- /abs/path/to/binary [args...]");
	if (!o->uid || !o->gid || !o->root)
		usage("--uid, --gid (both > 0) and --root are required");
	if (o->hostname && (!*o->hostname || strlen(o->hostname) > 64))
		usage("--hostname must be 1..64 characters");
	o->argv = argv + i + 1;
}

static void write_pid(const char *file)
{
	char buf[32];
	int fd = open(file, O_WRONLY | O_CLOEXEC);
	int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
	if (fd < 0 || write(fd, buf, n) != n)
		die("cgroup-procs %s", file);
	close(fd);
}

/* mkdir -p of every directory above `path` (and of `path` itself when `self`), mode 0755. */
static void mkdir_p(const char *path, int self)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *s = buf + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		if (c == '\0' && !self)
			return;
		*s = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			die("mkdir %s", buf);
		if (c == '\0')
			return;
		*s = c;
	}
}

/* Creates ROOT+path as a directory or an empty file, ready to mount `path` on. */
static void mount_point(const char *target, int dir)
{
	mkdir_p(target, dir);
	if (!dir) {
		int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0)
			die("create mount point %s", target);
		close(fd);
	}
}

static void bind(const char *src, const char *target, unsigned long flags)
{
	if (mount(src, target, NULL, MS_BIND | MS_REC, NULL) < 0)
		die("bind %s", src);
	/* A bind remount replaces the per-mount flags: `flags` is the complete set. */
	if (mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | flags, NULL) < 0)
		die("remount %s", target);
}

/* Exits if the parent is gone: the sync pipe's only writer is the parent. */
static void check_parent(int sync_rd)
{
	struct pollfd p = { .fd = sync_rd, .events = POLLIN };
	if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))) {
		errno = ESRCH;
		die("parent exited during setup");
	}
}

static void set_limit(int resource, unsigned long long v, const char *name)
{
	struct rlimit r = { .rlim_cur = v, .rlim_max = v };
	if (setrlimit(resource, &r) < 0)
		die("setrlimit(%s)", name);
}

static int by_value(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* Closes descriptors first..last (close_range, or one by one where the kernel lacks it). */
static void close_span(unsigned first, unsigned last)
{
	if (first > last || close_range(first, last, 0) == 0)
		return;
	struct rlimit r;
	unsigned max = getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < 1 << 20 ? (unsigned)r.rlim_cur : 1 << 20;
	for (unsigned fd = first; fd <= last && fd < max; fd++)
		close((int)fd);
}

/* Closes every descriptor above 2 except those in `keep` (sorted here), which lose FD_CLOEXEC:
 * they are meant for the program. */
static void close_fds_except(int *keep, int n)
{
	qsort(keep, n, sizeof *keep, by_value);
	unsigned next = 3;
	for (int i = 0; i < n; i++) {
		close_span(next, (unsigned)keep[i] - 1);
		int flags = fcntl(keep[i], F_GETFD);
		if (flags < 0 || fcntl(keep[i], F_SETFD, flags & ~FD_CLOEXEC) < 0)
			die("keep fd %d", keep[i]);
		next = (unsigned)keep[i] + 1;
	}
	close_span(next, ~0U);
}

static void run_child(const struct opts *o, int sync_rd)
{
	char path[PATH_MAX], buf[PATH_MAX];
	const char *root = o->root;
	char c;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		die("prctl(PDEATHSIG)");
	ssize_t n;
	do
		n = read(sync_rd, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1) {
		errno = n < 0 ? errno : ESRCH;
		die("wait for parent");
	}

	/* A root of mount points, with /dev, /proc and /tmp first (binds may go below /tmp). */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("make mounts private");
	if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=755") < 0)
		die("mount tmpfs on %s", root);
	snprintf(path, sizeof path, "%s/dev", root);
	if (mkdir(path, 0755) < 0 || mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755") < 0)
		die("mount /dev");
	for (int i = 0; i < o->n_devs; i++) {
		struct stat st;
		if (stat(o->devs[i], &st) < 0)
			die("device %s", o->devs[i]);
		if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
			errno = ENODEV;
			die("device %s", o->devs[i]);
		}
		snprintf(path, sizeof path, "%s%s", root, o->devs[i]);
		mkdir_p(path, 0);
		if (mknod(path, st.st_mode & (S_IFMT | 0777), st.st_rdev) < 0)
			die("mknod %s", path);
		if (chown(path, (uid_t)o->uid, (gid_t)o->gid) < 0 || chmod(path, st.st_mode & 0777) < 0)
			die("chown %s", path);
	}
	static const char *const dev_links[][2] = {
		{ "fd", "/proc/self/fd" }, { "stdin", "/proc/self/fd/0" },
		{ "stdout", "/proc/self/fd/1" }, { "stderr", "/proc/self/fd/2" },
	};
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof path, "%s/dev/%s", root, dev_links[i][0]);
		if (symlink(dev_links[i][1], path) < 0 && errno != EEXIST)
			die("symlink %s", path);
	}
	snprintf(path, sizeof path, "%s/proc", root);
	if (mkdir(path, 0555) < 0 || mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		die("mount /proc");
	snprintf(path, sizeof path, "%s/tmp", root);
	if (mkdir(path, 01777) < 0 || mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777") < 0)
		die("mount /tmp");

	for (int i = 0; i < o->n_binds; i++) {
		const char *src = o->binds[i].path;
		struct stat st;
		struct statvfs vfs;
		if (stat(src, &st) < 0 || statvfs(src, &vfs) < 0)
			die("bind source %s", src);
		unsigned long flags = MS_NOSUID | MS_NODEV;
		if (!o->binds[i].rw || (vfs.f_flag & ST_RDONLY))
			flags |= MS_RDONLY;
		if (vfs.f_flag & ST_NOEXEC)
			flags |= MS_NOEXEC; /* keep the source's noexec */
		snprintf(path, sizeof path, "%s%s", root, src);
		mount_point(path, S_ISDIR(st.st_mode));
		bind(src, path, flags);
	}

	/* The merged-/usr layout: /lib64/ld-linux-x86-64.so.2 must resolve when only /usr is bound. */
	static const char *const links[] = { "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32" };
	for (int i = 0; i < 6; i++) {
		struct stat st;
		if (lstat(links[i], &st) < 0 || !S_ISLNK(st.st_mode))
			continue;
		ssize_t len = readlink(links[i], buf, sizeof buf - 1);
		if (len < 0)
			die("readlink %s", links[i]);
		buf[len] = '\0';
		snprintf(path, sizeof path, "%s%s", root, links[i]);
		if (lstat(path, &st) == 0)
			continue; /* a bind mount is already there */
		if (symlink(buf, path) < 0)
			die("symlink %s", path);
	}

	/* Into the new root; the host's tree is detached and unreachable. */
	if (chdir(root) < 0)
		die("chdir to root");
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		die("pivot_root");
	if (umount2(".", MNT_DETACH) < 0)
		die("detach old root");
	if (chdir("/") < 0)
		die("chdir /");
	/* Read-only root. If both forms fail, / stays writable, but only by root, and no root
	 * remains after the credentials are dropped below, so the failure is ignored. */
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		(void)!mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);

	const char *host = o->hostname ? o->hostname : "hearth-jail";
	if (sethostname(host, strlen(host)) < 0)
		die("sethostname");
	set_limit(RLIMIT_CORE, 0, "CORE");
	if (o->nofile)
		set_limit(RLIMIT_NOFILE, o->nofile, "NOFILE");
	if (o->nproc)
		set_limit(RLIMIT_NPROC, o->nproc, "NPROC");
	if (o->fsize)
		set_limit(RLIMIT_FSIZE, o->fsize, "FSIZE");

	/* Drop root for good: with every uid non-zero the kernel clears all capabilities. */
	uid_t uid = (uid_t)o->uid;
	gid_t gid = (gid_t)o->gid;
	if (setgroups(0, NULL) < 0)
		die("setgroups");
	if (setresgid(gid, gid, gid) < 0)
		die("setresgid");
	if (setresuid(uid, uid, uid) < 0)
		die("setresuid");
	if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid) {
		errno = EPERM;
		die("verify credentials");
	}
	if (setuid(0) == 0) {
		errno = EPERM;
		die("verify root cannot be regained");
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		die("prctl(NO_NEW_PRIVS)");
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) /* changing credentials cleared it */
		die("prctl(PDEATHSIG)");
	check_parent(sync_rd);

	close_fds_except(o->keep_fds, o->n_keep_fds);
	execv(o->argv[0], o->argv);
	fprintf(stderr, "hearth-jailer: exec %s: %s\n", o->argv[0], strerror(errno));
	_exit(EXIT_EXEC); /* not die(): 127 tells the caller the jail worked but the program did not start */
}

static void forward(int sig)
{
	int saved = errno;
	if (child_pid > 0)
		kill(child_pid, sig);
	errno = saved;
}

int main(int argc, char **argv)
{
	struct opts o;
	parse(argc, argv, &o);

	for (int i = 0; i < o.n_cgroup_procs; i++)
		write_pid(o.cgroup_procs[i]);
	if (o.netns) {
		int fd = open(o.netns, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
			die("setns %s", o.netns);
		close(fd);
	}
	if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID) < 0)
		die("unshare");
	/* Keep no reference to the host's tree once the child detaches it (see Notes). */
	if (chdir("/") < 0)
		die("chdir /");
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	int sync[2];
	if (devnull < 0)
		die("open /dev/null");
	if (pipe2(sync, O_CLOEXEC) < 0)
		die("pipe");

	/* Block the forwarded signals until the handlers know the child's pid. */
	sigset_t fwd, old;
	sigemptyset(&fwd);
	for (int i = 0; i < N_FORWARDED; i++)
		sigaddset(&fwd, forwarded[i]);
	if (sigprocmask(SIG_BLOCK, &fwd, &old) < 0)
		die("sigprocmask");

	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sync[1]);
		close(devnull);
		for (int i = 0; i < N_FORWARDED; i++)
			signal(forwarded[i], SIG_DFL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		run_child(&o, sync[0]);
	}

	close(sync[0]);
	child_pid = pid;
	struct sigaction sa = { .sa_handler = forward, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < N_FORWARDED; i++)
		sigaction(forwarded[i], &sa, NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);

	if (printf("pid %d\n", (int)pid) < 0 || fflush(stdout) != 0 || dup2(devnull, STDOUT_FILENO) < 0 ||
	    write(sync[1], "go", 1) != 1) {
		kill(pid, SIGKILL);
		die("report pid");
	}
	close(devnull);

	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return EXIT_SETUP;
}
