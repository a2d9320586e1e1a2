/*
 * hearth-seal: makes a sealed in-memory copy of a file, so that unprivileged processes can map it
 * privately (copy-on-write) but nobody can ever change it.
 *
 * Usage: hearth-seal FILE NAME
 *
 * Why: clones map their template's guest RAM with MAP_PRIVATE. QEMU 7.2 opens that file O_RDWR even
 * for a private mapping, so a QEMU running as an unprivileged uid cannot use a root-owned 0444
 * file, and a file it may write would let one VM change pages that every other clone of the
 * template still reads. A memfd sealed with F_SEAL_WRITE can be opened read-write by anyone who can
 * reach it (its inode mode is 0777), mapped MAP_PRIVATE with PROT_WRITE, yet write(), shared
 * writable mappings, truncation and hole punching all fail with EPERM, whoever asks: the kernel
 * keeps the template immutable.
 *
 * Steps: memfd_create(NAME, MFD_ALLOW_SEALING); ftruncate to FILE's size; copy FILE's data extents
 * (SEEK_DATA/SEEK_HOLE), skipping all-zero blocks so the copy stays as sparse as the file; add the
 * seals SHRINK, GROW, WRITE and SEAL; print "ready <fd>\n" on stdout; then wait until stdin reaches
 * end-of-file and exit 0. Meanwhile the caller opens /proc/<pid>/fd/<fd> to hold the memfd itself.
 * A failing step prints "hearth-seal: <step>: <strerror>" on stderr and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK (1 << 20)

static void die(const char *step)
{
	fprintf(stderr, "hearth-seal: %s: %s\n", step, strerror(errno));
	exit(1);
}

static int all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 3 || strlen(argv[2]) == 0 || strlen(argv[2]) > 200) {
		fputs("hearth-seal: usage: hearth-seal FILE NAME (NAME: 1..200 characters)\n", stderr);
		return 1;
	}
	int src = open(argv[1], O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (src < 0 || fstat(src, &st) < 0)
		die("open source");
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		die("source is not a regular file");
	}
	int mfd = memfd_create(argv[2], MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (mfd < 0)
		die("memfd_create");
	if (ftruncate(mfd, st.st_size) < 0)
		die("ftruncate");
	unsigned char *buf = malloc(BLOCK);
	if (!buf)
		die("malloc");
	off_t pos = 0;
	while (pos < st.st_size) {
		off_t data = lseek(src, pos, SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO)
				break; /* only a hole remains */
			die("seek data");
		}
		off_t hole = lseek(src, data, SEEK_HOLE);
		if (hole < 0)
			die("seek hole");
		for (off_t off = data; off < hole;) {
			size_t want = hole - off < BLOCK ? (size_t)(hole - off) : BLOCK;
			ssize_t n = pread(src, buf, want, off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				if (n == 0)
					errno = EIO;
				die("read source");
			}
			if (!all_zero(buf, n)) {
				for (ssize_t done = 0; done < n;) {
					ssize_t w = pwrite(mfd, buf + done, n - done, off + done);
					if (w < 0 && errno == EINTR)
						continue;
					if (w <= 0)
						die("write memfd");
					done += w;
				}
			}
			off += n;
		}
		pos = hole;
	}
	free(buf);
	close(src);
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		die("add seals");
	if (printf("ready %d\n", mfd) < 0 || fflush(stdout) != 0)
		die("report");
	for (char c;;) {
		ssize_t n = read(STDIN_FILENO, &c, 1);
		if (n == 0 || (n < 0 && errno != EINTR))
			break;
	}
	return 0;
}
