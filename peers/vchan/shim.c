/*
 * The one part of the libxenvchan peer (peers/src/vchan.rs) that Rust cannot do through
 * plain declarations: libxenvchan_server_init and libxenvchan_client_init leave the
 * `blocking` bit field of struct libxenvchan uninitialised (the library mallocs the
 * structure), and a bit field's place is the C compiler's to know. These wrappers make a
 * vchan and clear that bit, so every read and write returns at once and the Rust side waits
 * on the event channel itself (with a deadline where it wants one).
 *
 * NULL on failure, with errno as libxenvchan left it.
 */

#include <stddef.h>

#include <libxenvchan.h>

struct libxenvchan *xr_vchan_server(int domain, const char *xs_path, size_t read_min,
				    size_t write_min)
{
	struct libxenvchan *ctrl =
		libxenvchan_server_init(NULL, domain, xs_path, read_min, write_min);

	if (ctrl != NULL)
		ctrl->blocking = 0;
	return ctrl;
}

struct libxenvchan *xr_vchan_client(int domain, const char *xs_path)
{
	struct libxenvchan *ctrl = libxenvchan_client_init(NULL, domain, xs_path);

	if (ctrl != NULL)
		ctrl->blocking = 0;
	return ctrl;
}
