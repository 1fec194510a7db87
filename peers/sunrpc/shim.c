/*
 * The C side of the SunRPC peer (peers/src/sunrpc.rs): the procedures of echo.x, the serving
 * loop, and a client API of plain arguments over the rpcgen stubs, so that Rust declares a
 * handful of functions instead of libtirpc's structures and macros.
 *
 * The stubs are rpcgen's re-entrant ones (-M): results go to buffers the caller gives, and
 * the dispatcher calls xenrpc_echo_prog_1_freeresult after each reply, so nothing is static
 * and nothing leaks over a long run.
 *
 * Return codes: 0 for success, a positive enum clnt_stat from libtirpc, or one of the
 * negative XR_ERR_* below; xr_sunrpc_error() turns any of them into a sentence.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <rpc/rpc.h>

#include "echo.h"

/* The shim's own failures (negative, apart from enum clnt_stat). */
#define XR_ERR_TOO_BIG (-1)
#define XR_ERR_SMALL_BUFFER (-2)
#define XR_ERR_NOT_CONNECTED (-3)
#define XR_ERR_NOT_LISTENING (-4)
#define XR_ERR_NODELAY (-5)
#define XR_ERR_TRANSPORT (-6)
#define XR_ERR_REGISTER (-7)
#define XR_ERR_POLL (-8)
#define XR_ERR_DECODE_BUFFER (-9)

/*
 * Record buffers of both ends: libtirpc's largest (it caps larger requests at 256 KiB). Its
 * defaults are 64 KiB for TCP but only 9000 bytes for a Unix socket; one size for both keeps
 * the two transports comparable, and a 1 MiB echo goes as four record fragments.
 */
#define XR_BUFSIZE (256 * 1024)

/* How long a call waits for its answer: a dead or stuck server gives RPC_TIMEDOUT. */
#define XR_CALL_TIMEOUT_S 10

/* The dispatcher rpcgen -m writes (echo.h does not declare it). */
void xenrpc_echo_prog_1(struct svc_req *rqstp, SVCXPRT *transp);

/* ---- server procedures ---- */

bool_t xr_ping_1_svc(void *argp, void *result, struct svc_req *rqstp)
{
	(void)argp;
	(void)result;
	(void)rqstp;
	return TRUE;
}

/*
 * The answer takes over the argument's buffer instead of copying it: the dispatcher frees
 * the (now empty) arguments with svc_freeargs and the answer with freeresult below.
 */
bool_t xr_echo_1_svc(xr_bytes *argp, xr_bytes *result, struct svc_req *rqstp)
{
	(void)rqstp;
	*result = *argp;
	argp->xr_bytes_val = NULL;
	argp->xr_bytes_len = 0;
	return TRUE;
}

int xenrpc_echo_prog_1_freeresult(SVCXPRT *transp, xdrproc_t xdr_result, caddr_t result)
{
	(void)transp;
	xdr_free(xdr_result, result);
	return 1;
}

/* ---- the serving loop ---- */

/*
 * libtirpc's server state is process-wide: every transport is in one poll set (svc_pollfd)
 * and svc_run() serves them all, so two svc_run() in two threads would read the same
 * connections at once. Instead one loop serves the process: the first xr_sunrpc_serve() runs
 * it, later ones add their transport under serve_lock, wake the loop (wake_fd) so that it
 * polls the new listener too, and wait for the loop to end. The loop releases serve_lock
 * only while it polls, so libtirpc's tables change in one thread at a time.
 */
static pthread_mutex_t serve_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t loop_ended = PTHREAD_COND_INITIALIZER;
static int loop_running;
static unsigned long loop_generation;
static int loop_code, loop_errno;
static int wake_fd = -1;

/* Runs with serve_lock held; returns (with it held) only on failure. */
static int serve_loop(int *err)
{
	struct pollfd *fds = NULL;
	int cap = 0;

	for (;;) {
		int n = svc_max_pollfd, ready, e, i;

		if (n + 1 > cap) {
			struct pollfd *more = realloc(fds, (size_t)(n + 1) * sizeof *fds);
			if (more == NULL) {
				free(fds);
				*err = ENOMEM;
				return XR_ERR_POLL;
			}
			fds = more;
			cap = n + 1;
		}
		for (i = 0; i < n; i++) {
			fds[i].fd = svc_pollfd[i].fd;
			fds[i].events = svc_pollfd[i].events;
			fds[i].revents = 0;
		}
		fds[n].fd = wake_fd;
		fds[n].events = POLLIN;
		fds[n].revents = 0;

		pthread_mutex_unlock(&serve_lock);
		ready = poll(fds, (nfds_t)n + 1, -1);
		e = errno;
		pthread_mutex_lock(&serve_lock);

		if (ready < 0) {
			if (e == EINTR)
				continue;
			free(fds);
			*err = e;
			return XR_ERR_POLL;
		}
		if (fds[n].revents != 0) {
			eventfd_t ignored;
			(void)eventfd_read(wake_fd, &ignored);
			ready--;
		}
		/* Accepts, reads and answers requests, closes the connections that ended. */
		if (ready > 0)
			svc_getreq_poll(fds, ready);
	}
}

/*
 * Serves XENRPC_ECHO_PROG on listen_fd (a listening stream socket, TCP or Unix), whose
 * ownership it takes. Sets TCP_NODELAY on a TCP listener: Linux copies it to the accepted
 * connections. Returns only on failure, with the errno behind it (or 0) in *err.
 */
int xr_sunrpc_serve(int listen_fd, int *err)
{
	int listening = 0, proto = 0, one = 1, code;
	socklen_t len = sizeof listening;
	SVCXPRT *xprt;

	*err = 0;
	if (getsockopt(listen_fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
		*err = errno;
	if (!listening) {
		close(listen_fd);
		return XR_ERR_NOT_LISTENING;
	}
	len = sizeof proto;
	if (getsockopt(listen_fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 &&
	    proto == IPPROTO_TCP &&
	    setsockopt(listen_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
		*err = errno;
		close(listen_fd);
		return XR_ERR_NODELAY;
	}

	pthread_mutex_lock(&serve_lock);
	if (wake_fd < 0) {
		wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (wake_fd < 0) {
			*err = errno;
			pthread_mutex_unlock(&serve_lock);
			close(listen_fd);
			return XR_ERR_TRANSPORT;
		}
	}
	errno = 0;
	xprt = svc_vc_create(listen_fd, XR_BUFSIZE, XR_BUFSIZE);
	if (xprt == NULL) {
		*err = errno;
		pthread_mutex_unlock(&serve_lock);
		close(listen_fd); /* libtirpc closes it only once it made a transport of it */
		return XR_ERR_TRANSPORT;
	}
	/* No netconfig: not registered with rpcbind; clients know the socket. */
	errno = 0;
	if (!svc_reg(xprt, XENRPC_ECHO_PROG, XENRPC_ECHO_VERS, xenrpc_echo_prog_1, NULL)) {
		*err = errno;
		svc_destroy(xprt); /* closes listen_fd */
		pthread_mutex_unlock(&serve_lock);
		return XR_ERR_REGISTER;
	}

	if (loop_running) {
		unsigned long generation = loop_generation;
		(void)eventfd_write(wake_fd, 1);
		while (loop_running && loop_generation == generation)
			pthread_cond_wait(&loop_ended, &serve_lock);
		code = loop_code;
		*err = loop_errno;
	} else {
		loop_running = 1;
		code = serve_loop(err);
		loop_code = code;
		loop_errno = *err;
		loop_running = 0;
		loop_generation++;
		pthread_cond_broadcast(&loop_ended);
	}
	pthread_mutex_unlock(&serve_lock);
	return code;
}

/* ---- client ---- */

/*
 * A client on connected_fd (a connected stream socket, which stays the caller's: it is not
 * closed by xr_sunrpc_destroy). NULL on failure, with the enum clnt_stat (or XR_ERR_*) in
 * *code and the errno behind it (or 0) in *err.
 */
CLIENT *xr_sunrpc_client(int connected_fd, int *code, int *err)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof peer;
	struct netbuf addr;
	struct timeval timeout = { XR_CALL_TIMEOUT_S, 0 };
	CLIENT *clnt;

	*code = 0;
	*err = 0;
	memset(&peer, 0, sizeof peer);
	if (getpeername(connected_fd, (struct sockaddr *)&peer, &len) < 0) {
		*code = XR_ERR_NOT_CONNECTED;
		*err = errno;
		return NULL;
	}
	/* For a connected socket libtirpc only records the address; it connects no further. */
	addr.buf = &peer;
	addr.len = len;
	addr.maxlen = sizeof peer;
	clnt = clnt_vc_create(connected_fd, &addr, XENRPC_ECHO_PROG, XENRPC_ECHO_VERS, XR_BUFSIZE,
			      XR_BUFSIZE);
	if (clnt == NULL) {
		*code = rpc_createerr.cf_stat;
		*err = rpc_createerr.cf_error.re_errno;
		return NULL;
	}
	/* Overrides the 25 s the rpcgen stubs pass to clnt_call. */
	clnt_control(clnt, CLSET_TIMEOUT, (char *)&timeout);
	return clnt;
}

int xr_sunrpc_ping(CLIENT *clnt)
{
	return (int)xr_ping_1(NULL, NULL, clnt);
}

/*
 * Sends len bytes of data, puts the answer in out and its length in *out_len. The answer is
 * decoded straight into out (xdr_bytes fills a buffer it is given), so out_cap must hold the
 * largest answer, XR_ECHO_MAX; a longer answer fails to decode (RPC_CANTDECODERES).
 */
int xr_sunrpc_echo(CLIENT *clnt, const uint8_t *data, uint32_t len, uint8_t *out,
		   uint32_t out_cap, uint32_t *out_len)
{
	xr_bytes arg, res;
	enum clnt_stat stat;

	*out_len = 0;
	if (len > XR_ECHO_MAX)
		return XR_ERR_TOO_BIG;
	if (out_cap < XR_ECHO_MAX)
		return XR_ERR_SMALL_BUFFER;
	arg.xr_bytes_len = len;
	arg.xr_bytes_val = (char *)data; /* only encoded, never written */
	res.xr_bytes_len = 0;
	res.xr_bytes_val = (char *)out;
	stat = xr_echo_1(&arg, &res, clnt);
	if (res.xr_bytes_val != (char *)out) {
		/* XDR allocated a buffer of its own after all: free it, never keep it. */
		xdr_free((xdrproc_t)xdr_xr_bytes, (char *)&res);
		return stat != RPC_SUCCESS ? (int)stat : XR_ERR_DECODE_BUFFER;
	}
	if (stat != RPC_SUCCESS)
		return (int)stat;
	*out_len = res.xr_bytes_len;
	return 0;
}

/* The errno behind the client's last failure, when it was a system error; else 0. */
int xr_sunrpc_errno(CLIENT *clnt)
{
	struct rpc_err e;

	memset(&e, 0, sizeof e);
	clnt_geterr(clnt, &e);
	switch (e.re_status) {
	case RPC_CANTSEND:
	case RPC_CANTRECV:
	case RPC_SYSTEMERROR:
		return e.re_errno;
	default:
		return 0;
	}
}

/* Frees the client; leaves its socket open (libtirpc closes only sockets it opened). */
void xr_sunrpc_destroy(CLIENT *clnt)
{
	clnt_destroy(clnt);
}

/* A sentence for any return code above; static, never to be freed. */
const char *xr_sunrpc_error(int code)
{
	switch (code) {
	case XR_ERR_TOO_BIG:
		return "the data is longer than the program's 1048576 bytes";
	case XR_ERR_SMALL_BUFFER:
		return "the answer buffer is shorter than the program's 1048576 bytes";
	case XR_ERR_NOT_CONNECTED:
		return "the socket is not connected";
	case XR_ERR_NOT_LISTENING:
		return "the socket is not a listening stream socket";
	case XR_ERR_NODELAY:
		return "TCP_NODELAY could not be set on the listening socket";
	case XR_ERR_TRANSPORT:
		return "libtirpc could not make a transport of the listening socket";
	case XR_ERR_REGISTER:
		return "libtirpc could not register the program";
	case XR_ERR_POLL:
		return "the serving loop's poll failed";
	case XR_ERR_DECODE_BUFFER:
		return "the answer was not decoded into the buffer given for it";
	default:
		return clnt_sperrno((enum clnt_stat)code);
	}
}
