/*
 * connload: a connection-rate load generator for the demux benchmark.
 *
 * Keeps CONCURRENCY connections in flight to 127.0.0.1:PORT for SECONDS,
 * shared among THREADS threads (each its own epoll loop);
 * each one connects, sends the payload (a ClientHello or a magic number and
 * the backend's command), reads the reply until the server closes, checks
 * that it got at least REPLY_BYTES, closes, and a new one takes its place.
 * Waiting for the server's close keeps TIME_WAIT sockets off the client's
 * ephemeral ports.
 * Prints one line: "completed N errors E seconds S".
 *
 * It is written in C, single-threaded on epoll, so that the generator costs
 * the machine far less per connection than any proxy under test; the
 * benchmark also runs it against the backend directly to show that.
 *
 * Usage: connload PORT PAYLOAD_FILE REPLY_BYTES CONCURRENCY SECONDS THREADS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    int sent;
    int got;
};

static char payload[65536];
static int payloadLength;
static int replyBytes;
static struct sockaddr_in target;
static double deadline;

/* One thread's share of the load and what it achieved. */
struct worker {
    pthread_t thread;
    int concurrency;
    long completed, errors;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Start a new connection in slot c; on failure count an error and retry. */
static void start(int ep, struct conn *c, struct worker *w)
{
    for (int tries = 0; tries < 1000; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            perror("socket");
            exit(2);
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0
            && errno != EINPROGRESS) {
            w->errors++;
            close(fd);
            continue;
        }
        c->fd = fd;
        c->sent = 0;
        c->got = 0;
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        return;
    }
    fprintf(stderr, "cannot connect\n");
    exit(2);
}

static void finish(int ep, struct conn *c, int ok, struct worker *w)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (ok)
        w->completed++;
    else
        w->errors++;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    int concurrency = w->concurrency;
    int ep = epoll_create1(0);
    struct conn *conns = calloc(concurrency, sizeof *conns);
    struct epoll_event *events = calloc(concurrency, sizeof *events);
    char buf[65536];
    for (int i = 0; i < concurrency; i++)
        start(ep, &conns[i], w);
    while (now() < deadline) {
        int n = epoll_wait(ep, events, concurrency, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (events[i].events & EPOLLOUT) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                ssize_t written = err ? -1
                    : send(c->fd, payload + c->sent, payloadLength - c->sent,
                           MSG_NOSIGNAL);
                if (written < 0) {
                    finish(ep, c, 0, w);
                    start(ep, c, w);
                    continue;
                }
                c->sent += written;
                if (c->sent == payloadLength) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
                continue;
            }
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r <= 0) {
                finish(ep, c, r == 0 && c->got >= replyBytes, w);
                start(ep, c, w);
                continue;
            }
            c->got += r;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: connload PORT PAYLOAD_FILE REPLY_BYTES"
                        " CONCURRENCY SECONDS THREADS\n");
        return 2;
    }
    int port = atoi(argv[1]);
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 2;
    }
    payloadLength = fread(payload, 1, sizeof payload, f);
    fclose(f);
    replyBytes = atoi(argv[3]);
    int concurrency = atoi(argv[4]);
    double seconds = atof(argv[5]);
    int threads = atoi(argv[6]);
    if (threads < 1 || threads > concurrency)
        threads = 1;

    target.sin_family = AF_INET;
    target.sin_port = htons(port);
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    struct worker *workers = calloc(threads, sizeof *workers);
    double begin = now();
    deadline = begin + seconds;
    for (int t = 0; t < threads; t++) {
        workers[t].concurrency = concurrency / threads
            + (t < concurrency % threads);
        pthread_create(&workers[t].thread, NULL, run, &workers[t]);
    }
    long completed = 0, errors = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(workers[t].thread, NULL);
        completed += workers[t].completed;
        errors += workers[t].errors;
    }
    printf("completed %ld errors %ld seconds %.6f\n", completed, errors,
           now() - begin);
    return 0;
}
