/* The physical limit: SCM_RIGHTS over a socketpair between two processes with
 * nothing in the way. Blocking sockets, MSG_CMSG_CLOEXEC, the receiver closes
 * every descriptor. Compiled by benchmark/run.js with cc.
 *
 *   fdbench throughput SECONDS FDS_PER_MSG   -> {"fds":N,"seconds":S}
 *   fdbench pingpong SECONDS                 -> {"rttUs":[...]}
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_CMSG_CLOEXEC
#define MSG_CMSG_CLOEXEC 0
#endif
#define MAX_FDS 253

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* One message: one byte of `tag` and `count` copies of `fd`. */
static void send_msg(int sock, char tag, int fd, int count) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = &tag, .iov_len = 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (count > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
    int *fds = (int *)CMSG_DATA(cmsg);
    for (int i = 0; i < count; i++) fds[i] = fd;
  }
  while (sendmsg(sock, &msg, 0) != 1) die("sendmsg");
}

/* Receives one message, closes its descriptors; returns its tag and count. */
static char recv_msg(int sock, int *count) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct cmsghdr align;
  } control;
  char tag;
  struct iovec iov = {.iov_base = &tag, .iov_len = 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                       .msg_controllen = sizeof control.buf};
  ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  if (n != 1) die("recvmsg");
  if (msg.msg_flags & MSG_CTRUNC) {
    fprintf(stderr, "control data truncated\n");
    exit(1);
  }
  *count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int n_fds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *fds = (int *)CMSG_DATA(c);
    for (int i = 0; i < n_fds; i++) close(fds[i]);
    *count += n_fds;
  }
  return tag;
}

static void receiver(int sock, int pingpong) {
  uint64_t received = 0;
  for (;;) {
    int count;
    char tag = recv_msg(sock, &count);
    received += count;
    if (tag == 'E') {
      if (write(sock, &received, sizeof received) != sizeof received) die("write");
      return;
    }
    if (pingpong && write(sock, "a", 1) != 1) die("write");
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: fdbench throughput SECONDS FDS_PER_MSG | pingpong SECONDS\n");
    return 2;
  }
  int pingpong = strcmp(argv[1], "pingpong") == 0;
  double seconds = atof(argv[2]);
  int per_msg = pingpong ? 1 : atoi(argv[3]);
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) die("socketpair");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    close(pair[0]);
    receiver(pair[1], pingpong);
    _exit(0);
  }
  close(pair[1]);
  int sock = pair[0];
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  size_t cap = 1 << 20, samples = 0;
  double *rtt = pingpong ? malloc(cap * sizeof *rtt) : NULL;
  double start = now(), stop = start + seconds;
  uint64_t sent = 0;
  for (;;) {
    if (pingpong) {
      double t0 = now();
      send_msg(sock, 'M', fd, 1);
      char ack;
      if (read(sock, &ack, 1) != 1) die("read");
      if (samples < cap) rtt[samples++] = (now() - t0) * 1e6;
      if (now() >= stop) break;
    } else {
      for (int i = 0; i < 64; i++) send_msg(sock, 'M', fd, per_msg);
      sent += 64 * (uint64_t)per_msg;
      if (now() >= stop) break;
    }
  }
  send_msg(sock, 'E', fd, 0);
  uint64_t received;
  if (read(sock, &received, sizeof received) != sizeof received) die("read");
  double elapsed = now() - start;
  waitpid(child, NULL, 0);
  if (pingpong) {
    printf("{\"rttUs\":[");
    for (size_t i = 0; i < samples; i++) printf(i ? ",%.2f" : "%.2f", rtt[i]);
    printf("]}\n");
  } else {
    if (received != sent) {
      fprintf(stderr, "sent %llu, received %llu\n", (unsigned long long)sent, (unsigned long long)received);
      return 1;
    }
    printf("{\"fds\":%llu,\"seconds\":%.6f}\n", (unsigned long long)received, elapsed);
  }
  return 0;
}
