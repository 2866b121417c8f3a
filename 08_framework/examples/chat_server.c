// chat_server.c: stage 07's chat room on the rx library. The protocol is 07's, byte for byte
// (07_chat/README.md, section 2: /nick /msg /who /quit, the notices, names unique without
// regard to case, lines with a control character refused, the idle timeout). What moved:
// the sockets, the output queues and the slow-consumer caps are the library's (io threads
// with -t N); the room, the names and the timers live here, in the main thread, where every
// callback runs. A broadcast is framed once (one rx_buf) and handed to every member.
//
// The one idea, as in 07: a turn only marks; the announcement comes after. A member that
// leaves (/quit, idle, too long a line, EOF, too slow) is out of the room at once (no more
// lines, not in /who, /msg cannot reach it) but keeps its name until `* NAME left` has been
// queued to the room, by announce_leavers, a task posted to the main loop: it runs after the
// frames the loop already holds, so a `/nick NAME` read in the same turn is "taken".
//
// The room is a list of members in join order (struct member), not the library's session
// table: a member outlives its session while its leaving is not announced yet (a closed
// session's pointer is gone, its name is not). Everything that changes the room goes through
// member_join, member_leave and announce_leavers. With --redis, a node shares the room with
// others through Redis pub/sub (examples/chat_cluster.h, notes in README.md section 9): its
// hooks are called from there, and from cmd_nick, cmd_who, cmd_msg, on_message and on_stop;
// without it none of them does anything.

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "options.h"
#include "rx.h"

// The longest line a client may send, without its "\n" or "\r\n" (07: MAX_LINE).
#define MAX_LINE 4096
// The longest name (/nick).
#define MAX_NAME 32
// A line as the room gets it: a name, a separator and the text, with room to spare.
#define OUT_MAX (MAX_LINE + MAX_NAME + 64)
// The frame type the chat codec gives a line that was too long (0: a line).
#define FRAME_TOO_LONG 1

enum member_state {
    M_OPEN,     // in the room: gets broadcasts, its lines are read
    M_LEAVING,  // left (why): out of the room; its name is held until announced
};

// Why a member left: what the room is told (announce_leavers).
enum leave_reason { LEFT_QUIT, LEFT_EOF, LEFT_IDLE, LEFT_TOO_LONG, LEFT_ERROR, LEFT_SLOW, LEFT_SHUTDOWN };
// The log's words for each (on_closed): the library's reason is 'local' for every close the
// room asked for; this says which.
static const char *const leave_reason_name[] = {
    [LEFT_QUIT] = "/quit",           [LEFT_EOF] = "the client closed",
    [LEFT_IDLE] = "idle timeout",    [LEFT_TOO_LONG] = "line too long",
    [LEFT_ERROR] = "error",          [LEFT_SLOW] = "too slow",
    [LEFT_SHUTDOWN] = "server stopping",
};

struct member {
    rx_session *s;  // NULL once its session closed (the member waits for its announcement)
    enum member_state state;
    enum leave_reason why;
    bool announced;       // `* NAME left` (or dropped) queued: the name is free
    bool on_leavers;      // on the list announce_leavers walks
    char name[MAX_NAME + 1];
    uint64_t id;          // its session's id (a cluster's awaited replies name it by this)
    uint64_t guest;       // the N of its guest name userN
    bool claimed;         // a cluster: its name is claimed in Redis (not a guest name)
    char pending[MAX_NAME + 1];  // a cluster: the name /nick waits for Redis to grant ("")
    rx_timer *idle;       // one-shot idle timer, NULL when not armed
    uint64_t spoke_ms;    // when it last sent a line (the idle clock)
    struct member *prev, *next;  // the room, join order (every member not freed)
    struct member *leave_next;   // the leavers list
};

static struct {
    rx_server *srv;
    rx_loop *loop;
    rx_codec codec;             // the chat codec (chat_codec): frames the room's lines too
    uint64_t idle_ms;           // --idle-timeout (0: never)
    struct member *head, *tail; // the room
    struct member *leavers;     // left, not announced yet
    bool announce_posted;       // announce_leavers is on the main loop's queue
    bool stopping;              // the shutdown began: nobody is announced any more
    uint64_t joins;             // members ever joined: the N of userN
    // The stop line's counters (07's names): a test reads them.
    uint64_t n_lines, n_deliveries, n_slow, n_idle, n_refused;
} room;

// ---------------------------------------------------------------- the codec

// 07's line codec on the library's: lines up to MAX_LINE bytes plus one "\r". A longer line
// is not a bad frame (which would close the connection at once): it becomes one frame of
// type FRAME_TOO_LONG, and everything after it is swallowed, so that the member gets
// `* line too long` before its connection closes (member_leave flushes it).
struct chat_codec_state {
    void *line;  // the line codec's state
    bool dead;   // a line was too long: nothing more is decoded
};

static rx_codec line_codec;  // rx_codec_line(MAX_LINE + 1): the "\r" of a "\r\n" fits

static void *chat_codec_create(const rx_codec *c)
{
    (void)c;
    struct chat_codec_state *st = calloc(1, sizeof *st);
    if (st != NULL && (st->line = line_codec.create(&line_codec)) == NULL) {
        free(st);
        st = NULL;
    }
    return st;
}

static void chat_codec_destroy(void *state)
{
    struct chat_codec_state *st = state;
    line_codec.destroy(st->line);
    free(st);
}

static ssize_t chat_codec_decode(const rx_codec *c, void *state, const char *in, size_t len,
                                 rx_emit_fn *emit, void *ctx)
{
    (void)c;
    struct chat_codec_state *st = state;
    if (st->dead)
        return (ssize_t)len;
    ssize_t used = line_codec.decode(&line_codec, st->line, in, len, emit, ctx);
    if (used >= 0)
        return used;
    st->dead = true;
    rx_frame f = {.data = in, .len = 0, .type = FRAME_TOO_LONG,
                  .flags = RX_FRAME_FIRST | RX_FRAME_LAST};
    (void)emit(ctx, &f);
    return (ssize_t)len;
}

static rx_codec chat_codec(void)
{
    line_codec = rx_codec_line(MAX_LINE + 1);
    rx_codec c = line_codec;
    c.name = "chat";
    c.create = chat_codec_create;
    c.destroy = chat_codec_destroy;
    c.decode = chat_codec_decode;
    return c;
}

// ---------------------------------------------------------------- sending

// Sends TEXT (N bytes, no newline) to M alone, under the caps. A notice (NOTICE true: the
// last words before it leaves) is never counted against them (rx_send_notice).
static void send_to(struct member *m, const char *text, size_t n, bool notice)
{
    if (m->s == NULL)
        return;
    if (!notice) {
        if (rx_send(m->s, text, n) == 0)
            room.n_deliveries++;
        return;
    }
    rx_buf *b = rx_buf_frame(&room.codec, 0, text, n);
    if (b == NULL || rx_send_notice(m->s, b) != 0)
        rx_log(RX_LOG_WARN, "%s: notice not sent", m->name);
    else
        room.n_deliveries++;
    if (b != NULL)
        rx_buf_release(b);
}

static void reply(struct member *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct member *m, const char *fmt, ...)
{
    char line[OUT_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n >= 0)
        send_to(m, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, false);
}

static void notice(struct member *m, const char *text)
{
    send_to(m, text, strlen(text), true);
}

// The fan-out: the line framed once, one reference handed to every member in the room but
// FROM (NULL: to all). The library judges each recipient's caps after its writes; a
// recipient dropped as too slow comes back as a `closed` callback, never in the middle of
// this walk.
static void broadcast(struct member *from, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void broadcast(struct member *from, const char *fmt, ...)
{
    char line[OUT_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    rx_buf *b = rx_buf_frame(&room.codec, 0, line, len);
    if (b == NULL) {
        rx_log(RX_LOG_ERROR, "out of memory for a broadcast: not sent");
        return;
    }
    for (struct member *r = room.head; r != NULL; r = r->next) {
        if (r == from || r->state != M_OPEN)
            continue;
        if (rx_send_buf(r->s, b) == 0)
            room.n_deliveries++;
    }
    rx_buf_release(b);  // ours: every queue holds its own
}

// ---------------------------------------------------------------- joining and leaving

static void idle_arm(struct member *m, uint64_t after_ms);
static void notice(struct member *m, const char *text);
static struct member *name_holder(const char *name);
static struct member *find_in_room(const char *name);

#include "chat_cluster.h"

static void member_free(struct member *m)
{
    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        room.head = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    else
        room.tail = m->prev;
    free(m);
}

static void idle_stop(struct member *m)
{
    if (m->idle != NULL) {
        rx_timer_stop(room.loop, m->idle);
        m->idle = NULL;
    }
}

// Tells the room about every member that left since the last run, in the order they left,
// and frees those whose session has closed already. A task on the main loop: it runs after
// the frames the loop had already taken in, which therefore still see the name held.
static void announce_leavers(void *arg)
{
    (void)arg;
    room.announce_posted = false;
    // The list was pushed at its head: reverse it, to announce in the order they left.
    struct member *list = NULL;
    while (room.leavers != NULL) {
        struct member *m = room.leavers;
        room.leavers = m->leave_next;
        m->leave_next = list;
        list = m;
    }
    while (list != NULL) {
        struct member *m = list;
        list = m->leave_next;
        m->on_leavers = false;
        m->announced = true;
        if (!room.stopping && m->why == LEFT_SLOW)
            broadcast(m, "* %s dropped (too slow)", m->name);
        else if (!room.stopping && m->why != LEFT_SHUTDOWN)
            broadcast(m, "* %s left", m->name);
        if (!room.stopping)
            cl_left(m);
        if (m->s == NULL)
            member_free(m);
    }
}

// M leaves the room for WHY: no more lines to it or from it, its name held until
// announce_leavers has told the room. With CLOSE, its session closes once its queued output
// (the notice just sent) has gone, within --drain-ms.
static void member_leave(struct member *m, enum leave_reason why, bool close)
{
    if (m->state != M_OPEN)
        return;
    m->state = M_LEAVING;
    m->why = why;
    idle_stop(m);
    if (close && m->s != NULL)
        rx_session_close(m->s, true);
    if (room.stopping)
        return;  // nobody is told: everyone is leaving
    m->on_leavers = true;
    m->leave_next = room.leavers;
    room.leavers = m;
    if (!room.announce_posted) {
        if (rx_loop_post(room.loop, announce_leavers, NULL) == 0)
            room.announce_posted = true;
        else
            announce_leavers(NULL);  // out of memory: at once, rather than never
    }
}

static void *on_create(void *arg, rx_session *s)
{
    (void)arg;
    (void)s;
    return calloc(1, sizeof(struct member));
}

// M (session S) joins the room: named userN, welcomed, announced to the others.
static void member_join(struct member *m, rx_session *s)
{
    m->s = s;
    m->state = M_OPEN;
    m->id = rx_session_id(s);
    m->guest = ++room.joins;
    guest_name(m, m->name, sizeof m->name);
    m->prev = room.tail;
    if (room.tail != NULL)
        room.tail->next = m;
    else
        room.head = m;
    room.tail = m;
    m->spoke_ms = rx_loop_now_ms(room.loop);
    idle_arm(m, room.idle_ms);
    rx_log(RX_LOG_INFO, "%s connected (session %" PRIu64 ", %s)", rx_session_peer(s),
           rx_session_id(s), m->name);
    reply(m, "* welcome %s", m->name);
    broadcast(m, "* %s joined", m->name);
    cl_joined(m);
}

static void on_opened(rx_session *s)
{
    struct member *m = rx_session_data(s);
    if (m == NULL) {
        rx_log(RX_LOG_ERROR, "session %" PRIu64 ": out of memory, closing", rx_session_id(s));
        rx_session_close(s, false);
        return;
    }
    member_join(m, s);
}

// The client's EOF: it will send no more, so it leaves the room now, as in 07 (announced,
// sent nothing more), and its session closes once what it is owed has gone (`* bye` too).
// Without this callback the library would keep a half-closed member in the room, receiving
// its lines, until its queue was written out.
static void on_eof(rx_session *s)
{
    struct member *m = rx_session_data(s);
    if (m != NULL && m->state == M_OPEN)
        member_leave(m, LEFT_EOF, true);
    else
        rx_session_close(s, true);
}

// The session is gone: M leaves (if it had not) for the reason the library gives; it is
// freed now if the room has been told, else by announce_leavers.
static void on_closed(rx_session *s, enum rx_close_reason why)
{
    struct member *m = rx_session_data(s);
    if (m == NULL)
        return;
    if (m->state == M_OPEN) {
        enum leave_reason r = why == RX_CLOSE_TOO_SLOW  ? LEFT_SLOW
                              : why == RX_CLOSE_SHUTDOWN ? LEFT_SHUTDOWN
                              : why == RX_CLOSE_PEER     ? LEFT_EOF
                                                         : LEFT_ERROR;
        if (r == LEFT_SLOW) {
            room.n_slow++;
            rx_log(RX_LOG_INFO, "%s: dropped (too slow)", m->name);
        }
        member_leave(m, r, false);
    }
    rx_log(RX_LOG_INFO, "session %" PRIu64 " (%s) closed: %s (%s)", rx_session_id(s), m->name,
           rx_close_reason_name(why), leave_reason_name[m->why]);
    idle_stop(m);
    m->s = NULL;
    if (!m->on_leavers)
        member_free(m);
}

// ---------------------------------------------------------------- the idle timer

// One one-shot timer per member, lazy: a line only moves spoke_ms; when the timer fires it
// re-arms itself for what is left, so a member that speaks costs no timer operation per line.
static void idle_fired(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)t;
    struct member *m = arg;
    m->idle = NULL;  // a one-shot timer is freed after this returns (rx.h, rule 5)
    uint64_t now = rx_loop_now_ms(loop), quiet = now - m->spoke_ms;
    if (m->state != M_OPEN)
        return;
    if (quiet < room.idle_ms) {
        idle_arm(m, room.idle_ms - quiet);
        return;
    }
    room.n_idle++;
    rx_log(RX_LOG_INFO, "%s: idle for %.3f s, closing", m->name, (double)room.idle_ms / 1000);
    notice(m, "* idle timeout");
    member_leave(m, LEFT_IDLE, true);
}

static void idle_arm(struct member *m, uint64_t after_ms)
{
    if (room.idle_ms == 0)
        return;
    m->idle = rx_timer_start(room.loop, after_ms, 0, idle_fired, m);
    if (m->idle == NULL)
        rx_log(RX_LOG_ERROR, "%s: out of memory for its idle timer: never timed out", m->name);
}

// ---------------------------------------------------------------- names and commands

// The member that holds NAME (any case): one in the room, or one that left and whose
// `* NAME left` has not been queued yet.
static struct member *name_holder(const char *name)
{
    for (struct member *m = room.head; m != NULL; m = m->next)
        if (!m->announced && (strcasecmp(m->name, name) == 0 || strcasecmp(m->pending, name) == 0))
            return m;
    return NULL;
}

// The member in the room called NAME (/msg): one that left gets nothing more.
static struct member *find_in_room(const char *name)
{
    for (struct member *m = room.head; m != NULL; m = m->next)
        if (m->state == M_OPEN && strcasecmp(m->name, name) == 0)
            return m;
    return NULL;
}

// 1 to MAX_NAME letters, digits, '_' or '-'.
static bool valid_name(const char *p, size_t n)
{
    if (n == 0 || n > MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

// "user" and digits, in any case: the names new members get, nobody's to take by /nick. In a
// cluster also "user", digits, "-" and anything (a guest name, "user3-NODE").
static bool reserved_name(const char *name)
{
    if (strncasecmp(name, "user", 4) != 0 || name[4] == '\0')
        return false;
    const char *p = name + 4;
    while (*p >= '0' && *p <= '9')
        p++;
    if (cl.on && p > name + 4 && *p == '-' && p[1] != '\0')
        return true;
    return *p == '\0';
}

static void cmd_nick(struct member *m, const char *arg, size_t n)
{
    if (!valid_name(arg, n)) {
        reply(m, "* bad name (1-%d letters, digits, _ or -)", MAX_NAME);
        return;
    }
    char name[MAX_NAME + 1];
    memcpy(name, arg, n);
    name[n] = '\0';
    if (strcmp(name, m->name) == 0) {
        reply(m, "* you are %s already", name);
        return;
    }
    // Its own name in another case is M's to take; a userN name is nobody's.
    struct member *holder = name_holder(name);
    if ((holder != NULL && holder != m) || reserved_name(name)) {
        reply(m, "* %s is taken", name);
        return;
    }
    if (cl.on) {
        cl_nick(m, name);  // granted when Redis says so
        return;
    }
    broadcast(m, "* %s is now %s", m->name, name);
    memcpy(m->name, name, n + 1);
    reply(m, "* you are now %s", name);
}

static void cmd_who(struct member *m)
{
    // One line however many members: built on the heap, sized for every name.
    size_t cap = 16, len = 0;
    for (struct member *r = room.head; r != NULL; r = r->next)
        cap += strlen(r->name) + 1;
    for (struct peer *p = cl.peers; p != NULL; p = p->next)  // a cluster: the other nodes'
        for (size_t i = 0; i < p->n; i++)
            cap += strlen(p->names[i]) + 1;
    char *line = malloc(cap);
    if (line == NULL) {
        rx_log(RX_LOG_ERROR, "%s: out of memory for /who", m->name);
        return;
    }
    len = (size_t)snprintf(line, cap, "* users:");
    for (struct member *r = room.head; r != NULL; r = r->next)
        if (r->state == M_OPEN)
            len += (size_t)snprintf(line + len, cap - len, " %s", r->name);
    for (struct peer *p = cl.peers; p != NULL; p = p->next)
        for (size_t i = 0; i < p->n; i++)
            len += (size_t)snprintf(line + len, cap - len, " %s", p->names[i]);
    send_to(m, line, len, false);
    free(line);
}

static void cmd_msg(struct member *m, const char *arg, size_t n)
{
    const char *sp = memchr(arg, ' ', n);
    if (sp == NULL || sp == arg || sp + 1 == arg + n) {
        reply(m, "* usage: /msg NAME text");
        return;
    }
    size_t name_len = (size_t)(sp - arg);
    struct member *to = NULL;
    if (name_len <= MAX_NAME) {
        char name[MAX_NAME + 1];
        memcpy(name, arg, name_len);
        name[name_len] = '\0';
        to = find_in_room(name);
    }
    const char *text = sp + 1;
    if (to == NULL && cl.on && name_len <= MAX_NAME) {
        char name[MAX_NAME + 1];
        memcpy(name, arg, name_len);
        name[name_len] = '\0';
        if (remote_holder(name) != NULL && cl.whole) {
            cl_publish("M %s %s %.*s", name, m->name, (int)(arg + n - text), text);
            return;
        }
    }
    if (to == NULL) {
        reply(m, "* no such user %.*s", name_len <= MAX_NAME ? (int)name_len : MAX_NAME, arg);
        return;
    }
    reply(to, "%s (private): %.*s", m->name, (int)(arg + n - text), text);
}

// 07's text policy (07_chat/server.c, text_refusal): the offset of the first control
// character in P (N bytes), *CP its code point; N if there is none. The control characters:
// every C0 byte but TAB, DEL, and the C1 controls as UTF-8 (C2 80 to C2 9F). NUL is one.
static size_t text_refusal(const char *p, size_t n, unsigned *cp)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            *cp = c;
            return i;
        }
        if (c == 0xc2 && i + 1 < n && (unsigned char)p[i + 1] >= 0x80 &&
            (unsigned char)p[i + 1] <= 0x9f) {
            *cp = (unsigned char)p[i + 1];
            return i;
        }
    }
    return n;
}

// One line from M, without its "\n" (the "\r" of a "\r\n" still there).
static void on_message(rx_session *s, const rx_frame *f)
{
    struct member *m = rx_session_data(s);
    if (m == NULL || m->state != M_OPEN)
        return;  // left: what it still sends is dropped
    room.n_lines++;
    m->spoke_ms = rx_loop_now_ms(room.loop);  // it spoke: the idle clock starts again
    size_t n = f->len;
    if (n > 0 && f->data[n - 1] == '\r')
        n--;  // one "\r" before the "\n": a "\r\n" line end
    if (f->type == FRAME_TOO_LONG || n > MAX_LINE) {
        notice(m, "* line too long");
        member_leave(m, LEFT_TOO_LONG, true);
        return;
    }
    const char *p = f->data;
    if (n == 0)
        return;  // empty lines are ignored
    unsigned cp;
    size_t at = text_refusal(p, n, &cp);
    if (at < n) {
        room.n_refused++;
        reply(m, "* refused: control character U+%04X at offset %zu", cp, at);
        return;
    }
    if (p[0] != '/') {
        broadcast(m, "%s: %.*s", m->name, (int)n, p);
        cl_line(m, p, n);  // a cluster: the other nodes' members get it through Redis
        return;
    }
    const char *sp = memchr(p, ' ', n);
    size_t cmd_len = sp != NULL ? (size_t)(sp - p) : n;
    const char *arg = sp != NULL ? sp + 1 : p + n;
    size_t arg_len = (size_t)(p + n - arg);
#define IS(c) (cmd_len == sizeof(c) - 1 && memcmp(p, c, cmd_len) == 0)
    if (IS("/nick")) {
        cmd_nick(m, arg, arg_len);
    } else if (IS("/who") && arg_len == 0) {
        cmd_who(m);
    } else if (IS("/msg")) {
        cmd_msg(m, arg, arg_len);
    } else if (IS("/quit") && arg_len == 0) {
        notice(m, "* bye");
        member_leave(m, LEFT_QUIT, true);
    } else {
        reply(m, "* unknown command");
    }
#undef IS
}

// ---------------------------------------------------------------- the shutdown

// Called once when the shutdown begins, before the library closes the sessions: every member
// is told (a notice: never what drops it), and nobody is announced.
static void on_stop(rx_server *srv, void *arg)
{
    (void)srv;
    (void)arg;
    cl_stop();  // a cluster: the peers are told now
    room.stopping = true;
    size_t n = 0;
    for (struct member *m = room.head; m != NULL; m = m->next) {
        if (m->state != M_OPEN)
            continue;
        n++;
        notice(m, "* server shutting down");
        member_leave(m, LEFT_SHUTDOWN, false);  // the library closes it, flushed
    }
    rx_log(RX_LOG_INFO, "stopping: %zu member%s told", n, n == 1 ? "" : "s");
}

// ---------------------------------------------------------------- main

static void usage(FILE *to)
{
    fprintf(to,
            "usage: chat_server [-H HOST] [-p PORT] [-t N] [--max-output BYTES]\n"
            "                   [--soft-output BYTES] [--soft-seconds S] [--idle-timeout S]\n"
            "                   [--drain-ms MS] [--redis HOST:PORT [--node NAME] [--name-ttl MS]]\n"
            "Stage 07's chat room on the rx library (default port 7007): lines go to everyone\n"
            "else; /nick NAME, /who, /msg NAME text, /quit. Logs to stderr; SIGINT or SIGTERM\n"
            "tells everyone `* server shutting down` and stops. The defaults are 07's.\n"
            "  -H, --host HOST       address to listen on (default 127.0.0.1)\n"
            "  -p, --port PORT       TCP port, 0 = any free port\n"
            "  -t, --threads N       io threads, 0 to 64 (default 0: the main loop does the I/O)\n"
            "      --max-output BYTES   hard cap: more than BYTES still queued after a write drops\n"
            "                        the member as too slow (0 = none; default 1048576)\n"
            "      --soft-output BYTES  soft cap: more than BYTES queued ...\n"
            "      --soft-seconds S     ... for S seconds drops it (0 = no soft cap; default\n"
            "                        262144 for 10 s)\n"
            "      --idle-timeout S     close a member that sends no line for S seconds, after\n"
            "                        `* idle timeout` (0 = never; default 300; fractions allowed)\n"
            "      --drain-ms MS        how long a leaving member's last output, and the shutdown,\n"
            "                        may take (0 to 60000; default 1000)\n"
            "      --redis HOST:PORT    join the room of every node on this redis-server (numeric\n"
            "                        address, [IPv6]:PORT) through its pub/sub: lines, names and /who span\n"
            "                        the nodes (README.md, section 9); without it: one room here\n"
            "      --node NAME          this node's name, unique among the nodes (1-16 letters,\n"
            "                        digits, _ or -; default n<pid>); guests are userN-NAME\n"
            "      --name-ttl MS        a claimed name expires MS after its node's last refresh\n"
            "                        (every MS/3), and a node silent for MS is gone: its users\n"
            "                        are announced as left (300 to 3600000; default 15000)\n"
            "  -h, --help            print this help and exit\n");
}

// chat_server's own options, taken out of ARGV (into cl) before the shared parser sees the
// rest: --redis, --node, --name-ttl, in the order take_cluster_option reads their indexes.
static const struct opt_own cluster_options[] = {
    {"--redis", 1}, {"--node", 1}, {"--name-ttl", 1}};

static void take_cluster_option(size_t k, const char *v)
{
    if (k == 0) {
        // HOST:PORT, HOST numeric (IPv4, or IPv6 in brackets: [::1]:6379).
        const char *colon = strrchr(v, ':'), *h = v;
        size_t hl = colon != NULL ? (size_t)(colon - v) : 0;
        if (hl >= 2 && v[0] == '[' && v[hl - 1] == ']') {
            h++;
            hl -= 2;
        }
        unsigned char addr[sizeof(struct in6_addr)];
        if (colon == NULL || hl == 0 || hl >= sizeof cl.host)
            opt_fail("bad --redis (want HOST:PORT, a numeric address)", v);
        memcpy(cl.host, h, hl);
        cl.host[hl] = '\0';
        if (inet_pton(AF_INET, cl.host, addr) != 1 && inet_pton(AF_INET6, cl.host, addr) != 1)
            opt_fail("bad --redis (want HOST:PORT, a numeric address)", v);
        cl.port = (int)opt_uint(colon + 1, 1, 65535, "bad --redis port (want 1 to 65535)");
        cl.on = true;
    } else if (k == 1) {
        if (!valid_name(v, strlen(v)) || strlen(v) > NODE_MAX)
            opt_fail("bad --node (want 1-16 letters, digits, _ or -)", v);
        snprintf(cl.node, sizeof cl.node, "%s", v);
    } else {
        cl.ttl_ms = opt_uint(v, 300, 3600000, "bad --name-ttl (want 300 to 3600000 ms)");
    }
}

int main(int argc, char **argv)
{
    // 07's defaults (the caps, the idle timeout, a leaving member's last second) go before
    // the user's options, which getopt reads later and which therefore win.
    static const char *defaults[] = {"--max-output", "1048576", "--soft-output", "262144",
                                     "--idle-timeout", "300", "--drain-ms", "1000"};
    enum { NDEF = sizeof defaults / sizeof defaults[0] };
    char **args = calloc((size_t)argc + NDEF + 1, sizeof *args);
    if (args == NULL) {
        fprintf(stderr, "chat_server: out of memory\n");
        return 1;
    }
    args[0] = argv[0];
    for (int i = 0; i < NDEF; i++)
        args[1 + i] = (char *)defaults[i];
    for (int i = 1; i < argc; i++)
        args[NDEF + i] = argv[i];
    struct server_opts o;
    opt_init("chat_server", usage);
    cl.ttl_ms = 15000;
    argc = opt_take_own(argc + NDEF, args, cluster_options, 3, take_cluster_option) - NDEF;
    if (cl.node[0] == '\0')
        snprintf(cl.node, sizeof cl.node, "n%ld", (long)getpid());
    server_opts_parse(argc + NDEF, args, 7007, 0, &o);
    free(args);
    // The idle timeout is the room's (07: counted from the member's last line, not from the
    // last byte either way): the library's own stays off.
    room.idle_ms = o.cfg.idle_ms;
    o.cfg.idle_ms = 0;

    rx_thread_set_name("main");
    room.srv = rx_server_new(&o.cfg);
    if (!room.srv)
        return 1;
    room.loop = rx_server_loop(room.srv);
    room.codec = chat_codec();
    rx_factory factory = {.create = on_create, .opened = on_opened, .message = on_message,
                          .closed = on_closed, .eof = on_eof};
    int port = rx_listen(room.srv, o.host, o.port, &room.codec, &factory);
    if (port < 0) {
        rx_server_free(room.srv);
        return 1;
    }
    rx_server_on_stop(room.srv, on_stop, NULL);
    if (cl.on && cl_start() != 0) {
        fprintf(stderr, "chat_server: out of memory\n");
        cl_free();
        rx_server_free(room.srv);
        return 1;
    }
    rx_log(RX_LOG_INFO,
           "chat: -t %d, --max-output %zu, --soft-output %zu for %.3f s, --idle-timeout %.3f s, "
           "--drain-ms %llu",
           o.cfg.io_threads, o.cfg.max_output, o.cfg.soft_output, (double)o.cfg.soft_ms / 1000,
           (double)room.idle_ms / 1000, (unsigned long long)o.cfg.drain_ms);
    print_listening(o.host, port);
    int rc = rx_server_run(room.srv);
    rx_stats st;
    rx_server_stats(room.srv, &st);
    // Members whose announcement never ran (the shutdown came first).
    while (room.head != NULL)
        member_free(room.head);
    cl_free();
    rx_server_free(room.srv);
    rx_log(RX_LOG_INFO,
           "stopped after %llu frames; %" PRIu64 " sessions, %" PRIu64 " lines in, %" PRIu64
           " deliveries, %" PRIu64 " dropped (too slow), %" PRIu64 " idle timeouts, %" PRIu64
           " lines refused, %llu bytes in, %llu bytes out, %llu writes, %llu peak queued bytes",
           (unsigned long long)st.frames_in, room.joins, room.n_lines, room.n_deliveries,
           room.n_slow, room.n_idle, room.n_refused, (unsigned long long)st.bytes_in,
           (unsigned long long)st.bytes_out, (unsigned long long)st.writes,
           (unsigned long long)st.peak_queued);
    return rc == 0 ? 0 : 1;
}
