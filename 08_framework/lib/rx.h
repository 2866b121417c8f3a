// rx.h: a small reactor library. One loop per thread: a main (logic) thread that runs every
// user callback, and 0..N io threads that own the sockets (read, decode, write) and never run
// user code. The one header an application includes.
//
// Thread rules are stated on every function:
//   "main thread"  only from the thread that called rx_server_run (every callback runs there)
//   "loop thread"  only from the thread that runs that loop
//   "any thread"   from anywhere
// Ownership is stated where something is handed over ("takes a reference", "copies").
//
// The lifetime rules (README.md, "Lifetime rules") in one place:
//  1. A session exists from its `opened` callback until its `closed` callback returns. Its
//     state (what `create` returned) is freed by the application in `closed`, never before.
//  2. rx_session_close never frees anything at once: the session stays valid, and every
//     pointer to it, until its `closed` callback, which runs in a later turn. Closing session
//     B from inside session A's callback is therefore safe.
//  3. Sessions are named across threads by a 64-bit id, increasing, never reused. A send or a
//     close that reaches an io thread after the connection has gone is dropped there: it can
//     never write to a descriptor that a new connection has since been given.
//  4. A buffer handed to rx_send is copied; an rx_buf handed to rx_send_buf gets one more
//     reference (the caller keeps its own and releases it when it is done).
//  5. A one-shot timer is freed after its callback returns; a repeating one by rx_timer_stop.
//     rx_timer_stop on a timer from inside its own callback is allowed (once).
//  6. No callback ever runs in an io thread.
//  7. A flushed close whose peer may still be sending (its input was refused, or bytes are
//     waiting unread) lingers: the write side is shut, the peer's bytes read and discarded
//     until it closes, at most config.linger_bytes and linger_ms; `closed` comes after that.
//  8. The peer's EOF means "no more requests", not "go away": without an `eof` callback the
//     session closes once its queued output has gone; with one, the application closes it
//     when it has answered what it owes (a reply it computes later still goes out).
#ifndef RX_H
#define RX_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct rx_loop rx_loop;
typedef struct rx_server rx_server;
typedef struct rx_session rx_session;
typedef struct rx_connector rx_connector;
typedef struct rx_timer rx_timer;
typedef struct rx_buf rx_buf;

// ------------------------------------------------------------------------------- logging

enum rx_log_level { RX_LOG_DEBUG, RX_LOG_INFO, RX_LOG_WARN, RX_LOG_ERROR };

// A sink gets one finished line (no trailing newline). It may be called from any thread, but
// never from two at once: the library holds its log lock around the call.
typedef void rx_log_sink(void *ctx, enum rx_log_level level, const char *thread, const char *line);

// Any thread. Replaces the sink (NULL: the default, stderr with time, level and thread name).
void rx_log_set_sink(rx_log_sink *sink, void *ctx);
// Any thread. Lines below LEVEL are dropped (default RX_LOG_INFO).
void rx_log_set_level(enum rx_log_level level);
// Any thread. One line, formatted. A line longer than RX_LOG_LINE_MAX bytes is cut to that
// length, its last three bytes "...". A sink must not log (the log lock is held).
#define RX_LOG_LINE_MAX 1024
void rx_log(enum rx_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rx_vlog(enum rx_log_level level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
// Any thread: names the calling thread in log lines (at most 15 bytes kept; also the OS name).
void rx_thread_set_name(const char *name);
// Any thread. LEVEL's name as the log writes it ("INFO"); a static string.
const char *rx_level_name(enum rx_log_level level);

// ------------------------------------------------------------------------- loops, timers

// Any thread. Runs FN(ARG) on LOOP's thread, in a later turn, in the order posted. Returns 0,
// or -1 when out of memory. The queue is swapped out under its lock and run outside it, so
// FN may post again, to its own loop too.
int rx_loop_post(rx_loop *loop, void (*fn)(void *arg), void *arg);
// Loop thread. Milliseconds on the monotonic clock, as of the start of this turn.
uint64_t rx_loop_now_ms(const rx_loop *loop);
// Any thread: the loop the calling thread runs, or NULL.
rx_loop *rx_loop_current(void);

typedef void rx_timer_fn(rx_loop *loop, rx_timer *t, void *arg);
// Longer delays are cut to this (2^62 ms): a "never" such as UINT64_MAX never fires.
#define RX_TIMER_MAX_MS (UINT64_C(1) << 62)
// Loop thread. Calls FN after AFTER_MS, then every REPEAT_MS (0: once). NULL if out of memory.
rx_timer *rx_timer_start(rx_loop *loop, uint64_t after_ms, uint64_t repeat_ms, rx_timer_fn *fn,
                         void *arg);
// Loop thread. Stops T and frees it (now, or after its callback returns when called from it).
// T must not have fired already if it was one-shot (rule 5).
void rx_timer_stop(rx_loop *loop, rx_timer *t);

// ---------------------------------------------------------------------------- codecs

// One frame (or one piece of a frame a codec streams) handed to the `message` callback.
// RX_FRAME_REFUSED: the codec refused the input; this last frame (FIRST and LAST too) says why
// in the codec's own terms, the application answers it and closes the session (flushed), and
// the codec swallows whatever the peer sends after it. The close then lingers (rule 7).
enum { RX_FRAME_FIRST = 1, RX_FRAME_LAST = 2, RX_FRAME_REFUSED = 4 };
typedef struct rx_frame {
    const char *data;  // valid during the callback only
    size_t len;
    uint16_t type;     // the header codec's type; 0 for the others
    unsigned flags;    // RX_FRAME_FIRST and/or RX_FRAME_LAST: a whole frame has both
    uint64_t total;    // the whole frame's length (streamed frames: known from the first piece)
} rx_frame;

// Called by a codec for each frame (or piece) it cuts. Returns 0, or -1 to stop decoding.
typedef int rx_emit_fn(void *ctx, const rx_frame *f);

// A codec: cuts a byte stream into frames (io thread, per-connection state) and frames a
// message for sending (main thread, no state). A value type: copy it, change its limits.
typedef struct rx_codec {
    const char *name;
    size_t max_frame;  // a frame (body) longer than this is a bad frame: the connection closes
    size_t chunk;      // streaming codecs hand over frames longer than this in pieces
    // Per-connection decoder state (NULL when the codec keeps none); freed with destroy.
    void *(*create)(const struct rx_codec *c);
    void (*destroy)(void *state);
    // Cuts frames from IN[0..LEN): calls EMIT for each; returns how many bytes it consumed
    // (the rest is handed back with more bytes after the next read), or -1 for a bad frame.
    ssize_t (*decode)(const struct rx_codec *c, void *state, const char *in, size_t len,
                      rx_emit_fn *emit, void *ctx);
    // Writes the bytes that go before a message of LEN bytes into HEAD (at most RX_HEAD_MAX)
    // and returns how many; TAIL (TAIL_LEN bytes) goes after it ("\n" for lines).
    size_t (*head)(const struct rx_codec *c, uint16_t type, size_t len, char *head);
    const char *tail;
    size_t tail_len;
} rx_codec;
#define RX_HEAD_MAX 16

// The codec constructors (these four, rx_codec_resp, rx_codec_resp_reply, rx_codec_http): any
// thread; each returns a value that owns nothing, copied by rx_listen and rx_connect (each
// connection then gets decoder state of its own from it).
// Bytes as they come: each read is one frame (no boundaries, no limit but the read size).
rx_codec rx_codec_raw(void);
// Lines ending in "\n" (a "\r" before it is kept): at most MAX bytes before the "\n".
rx_codec rx_codec_line(size_t max);
// {u32 big-endian length, body}: bodies up to MAX; longer than CHUNK are streamed in pieces.
rx_codec rx_codec_len(size_t max, size_t chunk);
// {u32 big-endian length, u16 big-endian type, body}: LENGTH counts the body only.
rx_codec rx_codec_hdr(size_t max);

// ------------------------------------------------------------------ the RESP2 codec
// (lib/codec_resp.c)

// Requests of the Redis protocol: an array of bulk strings ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
// or an inline command, one line of words split on spaces and tabs ("PING\r\n", as telnet and
// redis-benchmark's inline tests send; no quoting). Each frame is one whole request: its bytes
// as sent (data, len) and its argument count (type); rx_resp_args reads the arguments. Empty
// requests ("*0", "*-1", a blank line) are consumed and never handed over, as redis ignores them.
// Limits: a request is at most MAX_REQUEST bytes, every byte counted (length lines and CRLFs;
// an inline line with its "\n"), and has at most RX_RESP_MAX_ARGS arguments. Over either, or
// malformed, is refused, judged as early as the bytes allow: a "*<n>" over the count at its
// line, a "$<len>" that cannot fit at its line. A refusal is one last frame flagged
// RX_FRAME_REFUSED (type 0) whose bytes are the reason in redis 7's words ("Protocol error:
// invalid bulk length", also logged as "resp: Protocol error: ..."): the application sends
// it as "-ERR <reason>" and closes, as redis does; everything after it is swallowed.
#define RX_RESP_MAX_ARGS 1024
rx_codec rx_codec_resp(size_t max_request);

// One argument: LEN bytes at P, inside the frame (valid during the `message` callback only).
typedef struct rx_resp_arg {
    const char *p;
    size_t len;
} rx_resp_arg;
// Main thread. The arguments of F, a frame of rx_codec_resp, into ARGV (the first MAX of them);
// returns how many it stored: F->type of them when MAX allows (0 for a refusal). No copy:
// they point into F.
size_t rx_resp_args(const rx_frame *f, rx_resp_arg *argv, size_t max);

// A reply being built: the helpers append RESP2 values, rx_resp_send sends them as one message.
// A zeroed struct is an empty reply; keep one and reuse it (its memory stays for the next).
// The helpers below and rx_resp_reply_free: any thread, on a reply no other thread uses (it
// owns its memory: free it with rx_resp_reply_free).
typedef struct rx_resp_reply {
    char *data;
    size_t len, cap;
    bool failed;  // out of memory: rx_resp_send sends nothing and returns -1
} rx_resp_reply;
void rx_resp_simple(rx_resp_reply *r, const char *s);  // +S\r\n (S without CR or LF)
void rx_resp_error(rx_resp_reply *r, const char *msg);  // -MSG\r\n (MSG without CR or LF)
// -MSG\r\n, formatted (at most 511 bytes; a CR or LF from the arguments becomes a space).
void rx_resp_errorf(rx_resp_reply *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rx_resp_int(rx_resp_reply *r, long long v);                  // :V\r\n
void rx_resp_bulk(rx_resp_reply *r, const void *p, size_t n);     // $N\r\n<N bytes>\r\n
void rx_resp_null(rx_resp_reply *r);                              // $-1\r\n
void rx_resp_array(rx_resp_reply *r, size_t n);                   // *N\r\n, then N values
// Main thread. Sends what R holds (rx_send: copied) and empties R. Returns 0 (also when R was
// empty), or -1: out of memory, or the session is closing.
int rx_resp_send(rx_session *s, rx_resp_reply *r);
// Any thread. Frees R's memory; R is then an empty reply again.
void rx_resp_reply_free(rx_resp_reply *r);

// ------------------------------------------------------------------ RESP2 replies
// (lib/codec_resp_reply.c)
// What a client reads from redis-server: one whole top-level reply per frame, its bytes as
// sent (data, len) and its first byte as type ('+', '-', ':', '$', '*'). A reply is a simple
// string "+OK\r\n", an error "-ERR ...\r\n", an integer ":12\r\n", a bulk string "$3\r\nabc\r\n"
// or the null bulk "$-1\r\n", or an array "*2\r\n..." of replies (nested, or "*-1\r\n": null).
// Limits: a reply is at most MAX_REPLY bytes, every byte counted, and its arrays nest at most
// RX_RESP_REPLY_MAX_DEPTH deep. Over either, or malformed (an unknown type byte, a line not
// ending in "\r\n", a bad number, a bulk not followed by "\r\n"), is a bad frame, judged as
// early as the bytes allow (a "$<len>" or "*<n>" that cannot fit, at its line). Sending: the
// codec frames nothing, rx_send sends a command's bytes as they are (rx_resp_array and
// rx_resp_bulk build one; rx_resp_send sends it).
#define RX_RESP_REPLY_MAX_DEPTH 32
rx_codec rx_codec_resp_reply(size_t max_reply);

// One value of a reply, in the order they come (an array, then its elements).
typedef struct rx_resp_value {
    char type;          // '+', '-', ':', '$' or '*'
    bool null;          // "$-1" or "*-1"
    const char *p;      // '+', '-', '$': the string, LEN bytes (inside the frame)
    size_t len;
    long long integer;  // ':': the value; '*': the element count; '$': the length
    unsigned depth;     // 0 for the top-level value, 1 for its elements...
} rx_resp_value;
// Main thread. The values of F (a frame of rx_codec_resp_reply) in order, into V (the first
// MAX of them); returns how many F holds. No copy: strings point into F.
size_t rx_resp_values(const rx_frame *f, rx_resp_value *v, size_t max);

// ------------------------------------------------------------------ the HTTP/1.1 codec
// (lib/codec_http.c)
// HTTP/1.1 requests (RFC 9112), one whole request (head and Content-Length body) per frame,
// parsed once in the io thread: the frame carries the parse, rx_http_view reads it back.
// Refused input is not a bad frame: it becomes one last frame (flagged RX_FRAME_REFUSED) whose
// status (also f->type) the application answers before closing (400, 413 body too large, 431 head too large, 501
// Transfer-Encoding, 505 HTTP/2+); the decoder then swallows everything else the peer sends.
// The rules are 06_codecs/http.h's (smuggling: Content-Length with Transfer-Encoding, or two
// different Content-Lengths, is 400; folded lines 400; lines may end in a bare "\n").
#define RX_HTTP_MAX_HEADERS 100  // header lines per request (more: 431)
#define RX_HTTP_MAX_HEAD_LIMIT (1u << 20)

// A head of at most MAX_HEAD bytes (1 to 1 MiB; request line, headers and the empty line)
// and a body of at most MAX_BODY bytes (judged from Content-Length, before a body byte
// arrives). The codec's chunk is MAX_HEAD (what the input buffer holds: a partial head; a
// body it waits for is kept in its own state) and max_frame MAX_HEAD + MAX_BODY.
rx_codec rx_codec_http(size_t max_head, size_t max_body);

typedef struct rx_http_header {
    const char *name, *value;  // value without its leading and trailing spaces and tabs
    size_t name_len, value_len;
} rx_http_header;

// A request as the decoder saw it. Pointers are into the frame: valid during the callback.
typedef struct rx_http_request {
    int status;                 // 0: a request; else the status to answer before closing
    const char *error;          // status != 0: why (static text)
    const char *method, *target;
    size_t method_len, target_len;
    int minor;                  // HTTP/1.<minor>: 0, or 1 (1.1 .. 1.9)
    bool keep_alive;            // 1.1: unless "Connection: close"; 1.0: "Connection: keep-alive"
    bool expect_continue;       // "Expect: 100-continue"
    const char *body;
    size_t body_len;            // Content-Length
    size_t wire_len;            // the request's bytes on the wire (head + body)
    size_t nheaders;
    rx_http_header headers[RX_HTTP_MAX_HEADERS];
} rx_http_request;

// Main thread (in `message`). Fills R from a frame of rx_codec_http, without parsing again.
// Returns 0, or -1 when F is not such a frame.
int rx_http_view(const rx_frame *f, rx_http_request *r);
// Any thread. The first header NAME (any case) of R, its length in *LEN; NULL if none.
const char *rx_http_header_find(const rx_http_request *r, const char *name, size_t *len);
// Any thread. Is R's method exactly M ("GET")?
bool rx_http_method_is(const rx_http_request *r, const char *m);
// Any thread. The reason phrase of STATUS ("Not Found"), "Unknown" for one it does not know.
const char *rx_http_reason(int status);

enum {
    RX_HTTP_CLOSE = 1,    // "Connection: close" (else "Connection: keep-alive")
    RX_HTTP_NO_BODY = 2,  // a reply to HEAD: Content-Length of BODY_LEN, no body bytes
};
// Any thread. Frames a reply in OUT (CAP bytes): "HTTP/1.1 STATUS REASON", Content-Length,
// Connection, then HEADERS (NULL, or lines each ending in "\r\n"), the empty line and BODY.
// Returns the reply's length; when it is larger than CAP, OUT holds nothing usable.
size_t rx_http_response(char *out, size_t cap, int status, const char *headers,
                        const void *body, size_t body_len, unsigned flags);
// Main thread. rx_http_response, sent on S in one rx_send. Returns the bytes sent, or -1.
ssize_t rx_http_send(rx_session *s, int status, const char *headers, const void *body,
                     size_t body_len, unsigned flags);

// ------------------------------------------------------------------------ shared buffers

// Main thread. A message framed once with CODEC (type TYPE), to send to many sessions: one
// reference held by the caller. NULL if out of memory.
rx_buf *rx_buf_frame(const rx_codec *codec, uint16_t type, const void *msg, size_t len);
// Main thread: drops the caller's reference (the last holder frees it, in whatever thread).
void rx_buf_release(rx_buf *b);
// Any thread: the framed bytes.
size_t rx_buf_len(const rx_buf *b);

// ------------------------------------------------------------------------------ sessions

// Why a session closed, as its `closed` callback is told (and the log line says).
enum rx_close_reason {
    RX_CLOSE_PEER,       // the peer closed (EOF) and everything queued went out
    RX_CLOSE_RESET,      // the peer reset the connection (ECONNRESET, EPIPE)
    RX_CLOSE_ERROR,      // another socket error, or out of memory
    RX_CLOSE_IDLE,       // nothing read or written for config.idle_ms
    RX_CLOSE_TOO_SLOW,   // output over max_output after a write, or over soft_output too long
    RX_CLOSE_BAD_FRAME,  // the codec refused the input
    RX_CLOSE_SHUTDOWN,   // the server stopped
    RX_CLOSE_LOCAL,      // the application called rx_session_close
};
// Any thread. WHY's name as the log writes it ("idle timeout"); a static string.
const char *rx_close_reason_name(enum rx_close_reason why);

// What a listener or a connector creates for each connection: the SessionFactory. Every
// callback runs in the main thread. Only `message` is required.
typedef struct rx_factory {
    void *arg;  // handed to create
    // Per-session state, returned by rx_session_data. NULL is allowed (no state).
    void *(*create)(void *arg, rx_session *s);
    void (*opened)(rx_session *s);
    void (*message)(rx_session *s, const rx_frame *f);
    // The last callback (rule 1): free the session's state here.
    void (*closed)(rx_session *s, enum rx_close_reason why);
    // Optional: the session's output queue reached config.high_water (once per crossing).
    void (*high_water)(rx_session *s, size_t queued);
    // Optional: after a high_water, its queue has been written out whole. With the two, an
    // application pauses a session that produces faster than its peer reads, and resumes it.
    void (*drained)(rx_session *s);
    // Optional: the peer sent EOF (it will send no more; every frame before it was delivered).
    // Without it the session closes once its queued output has gone. With it the session
    // stays open for the application's later replies, and the application closes it (flushed)
    // when it owes nothing more (rule 8). Not called at the shutdown.
    void (*eof)(rx_session *s);
} rx_factory;

// Main thread. The session's id (never 0, never reused), state, peer ("127.0.0.1:40000").
uint64_t rx_session_id(const rx_session *s);
void *rx_session_data(const rx_session *s);
const char *rx_session_peer(const rx_session *s);
const rx_codec *rx_session_codec(const rx_session *s);

// Main thread. Frames MSG with the session's codec and sends it (copies MSG). Returns 0, or
// -1 when the session is closing or out of memory.
int rx_send(rx_session *s, const void *msg, size_t len);
int rx_send_typed(rx_session *s, uint16_t type, const void *msg, size_t len);
// Main thread. Sends B (already framed): takes one more reference. Returns 0 or -1.
int rx_send_buf(rx_session *s, rx_buf *b);
// Main thread. A notice (a goodbye, a reason for closing): sent like rx_send_buf but never
// counted against the output caps, so it cannot be what drops a slow session.
int rx_send_notice(rx_session *s, rx_buf *b);
// Main thread. Closes S: after its queued output has gone (FLUSH; bounded by
// config.drain_ms), or at once. The `closed` callback follows in a later turn (rule 2).
void rx_session_close(rx_session *s, bool flush);
// Main thread. Stops and restarts reading from S (input stays in the kernel: TCP pushes back).
void rx_session_pause(rx_session *s);
void rx_session_resume(rx_session *s);
bool rx_session_closing(const rx_session *s);

// Main thread. The session table: lookup by id (NULL when gone), and iteration in opening
// order (a session closed during the iteration stays in it until its `closed` callback).
rx_session *rx_session_find(rx_server *srv, uint64_t id);
rx_session *rx_session_first(rx_server *srv);
rx_session *rx_session_next(rx_session *s);
size_t rx_session_count(const rx_server *srv);

// ------------------------------------------------------------------------------ the server

typedef struct rx_config {
    int io_threads;       // 0: the main loop does the I/O too
    size_t max_output;    // hard cap: bytes still queued after a write (0: none)
    size_t soft_output;   // soft cap: queued over this ...
    uint64_t soft_ms;     // ... for this long drops the session (0: no soft cap)
    size_t high_water;    // the high_water callback's threshold (0: none)
    uint64_t idle_ms;     // nothing read or written for this long closes a session (0: never)
    uint64_t drain_ms;    // how long a closing session's output may take, and the shutdown's
    size_t turn_bytes;    // at most this much read from one connection per loop turn
    uint64_t linger_ms;   // a lingering close (rule 7) lasts at most this long (0: none) ...
    size_t linger_bytes;  // ... and discards at most this much of the peer's input (< 4 GiB)
} rx_config;

// Any thread. Defaults: io_threads 0, max_output 64 MiB, soft 8 MiB for 10 s, no high water, no idle
// timeout, drain 1500 ms, turn 64 KiB, linger 2000 ms and 1 MiB.
rx_config rx_config_default(void);

// Main thread (it becomes the main thread). Blocks SIGINT and SIGTERM in the calling thread
// (io threads inherit the mask) and reads them from a signalfd; sets SIGPIPE to SIG_IGN for
// the process. Call it before creating any thread of your own, or block SIGINT and SIGTERM in
// those threads: a signal the kernel hands to a thread that does not block it kills the
// process (its default action) and the shutdown never runs. NULL on failure (logged).
rx_server *rx_server_new(const rx_config *cfg);
rx_loop *rx_server_loop(rx_server *srv);

// Main thread. Listens on HOST:PORT (PORT 0: the kernel picks); every connection gets a
// session from FACTORY and frames cut by CODEC (both copied). Returns the bound port, or -1.
int rx_listen(rx_server *srv, const char *host, int port, const rx_codec *codec,
              const rx_factory *factory);

// Main thread. Runs the main loop (and starts the io threads) until SIGINT/SIGTERM or
// rx_server_stop, then shuts down: stops accepting, flushes sessions for up to drain_ms,
// closes them (RX_CLOSE_SHUTDOWN), joins every thread. Returns 0, or -1 on a fatal error.
int rx_server_run(rx_server *srv);
// Main thread (in a callback): begins the shutdown rx_server_run ends with.
void rx_server_stop(rx_server *srv);
// Optional, main thread: called once when the shutdown begins, before sessions close (to
// send each a notice).
void rx_server_on_stop(rx_server *srv, void (*fn)(rx_server *srv, void *arg), void *arg);
// Main thread, after rx_server_run returned. Frees everything.
void rx_server_free(rx_server *srv);

// Main thread. Counters, for the stop line, tests and benchmarks. The io threads' counters (bytes, reads,
// writes, caps) are added when rx_server_run returns: read them after it; during the run only
// the main thread's (accepted, closed, frames, batches) are current.
typedef struct rx_stats {
    uint64_t accepted, closed, frames_in, bytes_in, bytes_out;
    uint64_t reads, writes, posts, wakeups, batches, dropped_commands;
    uint64_t too_slow, bad_frames, idle_closed, turn_yields, peak_queued;
    // rewatches: changes of a socket's poller interest (an epoll_ctl MOD each); refused:
    // RX_FRAME_REFUSED frames; lingered: lingering closes (rule 7); linger_cut: those ended
    // by linger_bytes or linger_ms rather than by the peer's EOF.
    uint64_t rewatches, refused, lingered, linger_cut;
} rx_stats;
void rx_server_stats(const rx_server *srv, rx_stats *out);

// ------------------------------------------------------------------------- connectors

typedef struct rx_connect_opts {
    uint64_t timeout_ms;    // a connect that takes longer fails (default 3000; 0: no timeout)
    uint64_t retry_ms;      // first wait before reconnecting (default 100); doubles each failure
    uint64_t retry_max_ms;  // up to this (default 5000); the wait is uniform in [D/2, D]
    bool reconnect;         // reconnect when the connection fails or closes (default true)
    // Optional: a connect attempt failed (ERR is an errno value). Main thread.
    void (*failed)(rx_connector *c, int err, unsigned attempt, void *arg);
} rx_connect_opts;
// Any thread. The defaults above.
rx_connect_opts rx_connect_opts_default(void);

// Main thread. Connects to HOST:PORT (numeric) asynchronously; the session it makes gets
// FACTORY's callbacks, like an accepted one. HOST is read now; CODEC, FACTORY and OPTS (NULL:
// the defaults) are copied. NULL if out of memory, or PORT, HOST or FACTORY (no `message`)
// is not usable.
rx_connector *rx_connect(rx_server *srv, const char *host, int port, const rx_codec *codec,
                         const rx_factory *factory, const rx_connect_opts *opts);
// Main thread. The connector's session, or NULL while it is not connected.
rx_session *rx_connector_session(const rx_connector *c);
// Main thread. Stops reconnecting and closes its session (flushed); frees the connector (at
// once, or when its session has closed). Allowed from any callback, its own `failed` and its
// session's `opened` and `closed` included. The first attempt starts in a later turn, never
// inside rx_connect.
void rx_connector_free(rx_connector *c);

#endif
