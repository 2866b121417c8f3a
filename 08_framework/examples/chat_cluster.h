// chat_cluster.h: chat_server's nodes joined through Redis pub/sub (issue 17; notes:
// README.md, section 9, "chat_server --redis"). Included by chat_server.c alone, after the
// room and its members are defined: every function is static and runs in the main thread.
// Without --redis nothing here runs (cl.on is false) and the server is stage 07's room, byte for byte.
//
// Two outbound sessions to redis-server, both the library's connector (reconnect with
// backoff): SUB, in SUBSCRIBE mode on the room's channel, and CMD, for everything else
// (PUBLISH, the name claims, their refresh and release). The room is "whole" while CMD is
// connected and SUB has confirmed its subscription; else it is "split": local service goes on,
// nothing is published, names are granted by this node alone and claimed again on return.
//
// A message on the channel is "<node> <kind> <rest>", one publication per event, in the order
// the node's CMD session sent them (Redis keeps a publisher's order):
//   L NAME TEXT       a line          (peers deliver "NAME: TEXT")
//   M TO FROM TEXT    a private line  (the node that holds TO delivers "FROM (private): TEXT")
//   J NAME / Q NAME / D NAME          joined / left / dropped (too slow)
//   N OLD NEW         a rename
//   H NAME...         heartbeat: every name the node holds (its roster), every ttl/3
//   S                 "I am (back) in the room": every node answers with its H at once
//   B                 the node stops: its users left
// A node skips its own publications (its name first): it delivered them locally already.
// Peers keep each other's rosters (struct peer) for /who, /msg and the fast "taken" answer; a
// peer not heard for --name-ttl (while the room is whole) is gone: its users are announced
// as left. An H that differs from what a peer's roster says (events lost during a split) is
// announced as the joins and leaves that make up the difference; the first H of a node we had
// not heard of is taken silently (its members were there before: a node that starts learns
// the room without a flood of joins).
//
// Names: a /nick is granted when Redis answers `SET chat:name:<lower> <node> NX PX ttl` with
// OK (the member waits meanwhile; a member that left meanwhile has its claim released). Each
// held name is refreshed every ttl/3 by a script that extends it if it is this node's or takes
// it if it is free, and answers 0 when another node holds it: the conflict rule (a name
// granted on two sides of a split) is that Redis's holder keeps it, the other member becomes
// its guest name again. Guest names are "userN-NODE" (cluster-unique without a claim; like
// 07's userN, nobody's to take by /nick).

#ifndef CHAT_CLUSTER_H
#define CHAT_CLUSTER_H

#define NODE_MAX 16
#define CL_CHANNEL "chat:room"
#define CL_KEY "chat:name:"
// A subscriber's message: a roster of ~30000 names at most.
#define CL_MAX_REPLY (1u << 20)

// Extends KEYS[1] if it holds ARGV[1], takes it if free; 1 when it is ours after, else 0.
static const char CL_REFRESH[] =
    "local v = redis.call('get', KEYS[1]) "
    "if v == false then redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) return 1 end "
    "if v == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end "
    "return 0";
// Deletes KEYS[1] if it holds ARGV[1].
static const char CL_RELEASE[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
    "return 0";

enum pend_kind { P_PUBLISH, P_CLAIM, P_REFRESH, P_RELEASE };

// A command sent on CMD whose reply has not come yet (replies come in order).
struct pend {
    enum pend_kind kind;
    uint64_t id;  // the member's session id (P_CLAIM, P_REFRESH)
    char name[MAX_NAME + 1];
    struct pend *next;
};

// What this node knows of another: its roster, and when it was last heard.
struct peer {
    char node[NODE_MAX + 1];
    uint64_t heard_ms;
    bool synced;  // its first H came: the ones after it are compared with the roster
    char (*names)[MAX_NAME + 1];
    size_t n, cap;
    struct peer *next;
};

static struct {
    bool on;                   // --redis given
    char host[64];
    int port;
    char node[NODE_MAX + 1];   // --node
    uint64_t ttl_ms;           // --name-ttl
    rx_connector *sub, *cmd;
    rx_session *cmd_s;         // CMD's session while connected
    bool subscribed;           // SUB's subscription confirmed
    bool whole, ever_whole;
    struct pend *head, *tail;  // CMD's awaited replies
    struct peer *peers;
    rx_timer *beat;            // every ttl/3: refresh, heartbeat, peers' expiry
    rx_resp_reply out;         // the command being built (reused)
    // The stop line's counters.
    uint64_t published, received, own, remote_lines, claims, granted, refused, lost, splits,
        wholes, expired;
} cl;

static void cl_update(void);

// ---------------------------------------------------------------- small helpers

static void lower_copy(char *dst, const char *src)
{
    size_t i = 0;
    for (; src[i] != '\0'; i++)
        dst[i] = (char)((src[i] >= 'A' && src[i] <= 'Z') ? src[i] + 32 : src[i]);
    dst[i] = '\0';
}

static struct member *member_by_id(uint64_t id)
{
    for (struct member *m = room.head; m != NULL; m = m->next)
        if (m->id == id)
            return m;
    return NULL;
}

// Sends the command in cl.out on CMD, its reply awaited as KIND. False when CMD is gone.
static bool cl_send(enum pend_kind kind, uint64_t id, const char *name)
{
    if (cl.cmd_s == NULL) {
        cl.out.len = 0;
        return false;
    }
    struct pend *p = calloc(1, sizeof *p);
    if (p == NULL || rx_resp_send(cl.cmd_s, &cl.out) != 0) {
        free(p);
        cl.out.len = 0;
        rx_log(RX_LOG_WARN, "cluster: a command not sent (out of memory or closing)");
        return false;
    }
    p->kind = kind;
    p->id = id;
    if (name != NULL)
        snprintf(p->name, sizeof p->name, "%s", name);
    if (cl.tail != NULL)
        cl.tail->next = p;
    else
        cl.head = p;
    cl.tail = p;
    return true;
}

// Publishes "<node> FMT..." on the channel, when the room is whole (a split publishes nothing:
// no delivery across an outage).
static void cl_publish(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void cl_publish(const char *fmt, ...)
{
    if (!cl.on || !cl.whole)
        return;
    char msg[OUT_MAX + NODE_MAX + 8];
    int h = snprintf(msg, sizeof msg, "%s ", cl.node);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg + h, sizeof msg - (size_t)h, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)h + (size_t)n < sizeof msg ? (size_t)h + (size_t)n : sizeof msg - 1;
    rx_resp_array(&cl.out, 3);
    rx_resp_bulk(&cl.out, "PUBLISH", 7);
    rx_resp_bulk(&cl.out, CL_CHANNEL, strlen(CL_CHANNEL));
    rx_resp_bulk(&cl.out, msg, len);
    if (cl_send(P_PUBLISH, 0, NULL))
        cl.published++;
}

// The heartbeat: every name this node holds (members in the room), in one H.
static void cl_publish_roster(void)
{
    if (!cl.whole)
        return;
    size_t cap = NODE_MAX + 8;
    for (struct member *m = room.head; m != NULL; m = m->next)
        cap += strlen(m->name) + 1;
    char *msg = malloc(cap);
    if (msg == NULL)
        return;
    size_t len = (size_t)snprintf(msg, cap, "%s H", cl.node);
    for (struct member *m = room.head; m != NULL; m = m->next)
        if (m->state == M_OPEN)
            len += (size_t)snprintf(msg + len, cap - len, " %s", m->name);
    rx_resp_array(&cl.out, 3);
    rx_resp_bulk(&cl.out, "PUBLISH", 7);
    rx_resp_bulk(&cl.out, CL_CHANNEL, strlen(CL_CHANNEL));
    rx_resp_bulk(&cl.out, msg, len);
    free(msg);
    if (cl_send(P_PUBLISH, 0, NULL))
        cl.published++;
}

// EVAL SCRIPT on NAME's key with this node and the ttl; its reply awaited as KIND for ID.
static void cl_eval(const char *script, enum pend_kind kind, uint64_t id, const char *name)
{
    char key[sizeof CL_KEY + MAX_NAME], ttl[24];
    memcpy(key, CL_KEY, sizeof CL_KEY - 1);
    lower_copy(key + sizeof CL_KEY - 1, name);
    snprintf(ttl, sizeof ttl, "%" PRIu64, cl.ttl_ms);
    rx_resp_array(&cl.out, kind == P_RELEASE ? 5 : 6);
    rx_resp_bulk(&cl.out, "EVAL", 4);
    rx_resp_bulk(&cl.out, script, strlen(script));
    rx_resp_bulk(&cl.out, "1", 1);
    rx_resp_bulk(&cl.out, key, strlen(key));
    rx_resp_bulk(&cl.out, cl.node, strlen(cl.node));
    if (kind != P_RELEASE)
        rx_resp_bulk(&cl.out, ttl, strlen(ttl));
    (void)cl_send(kind, id, name);
}

static void cl_release(const char *name)
{
    if (cl.whole)
        cl_eval(CL_RELEASE, P_RELEASE, 0, name);
}

// ---------------------------------------------------------------- peers

static struct peer *peer_get(const char *node, size_t len, bool create)
{
    for (struct peer *p = cl.peers; p != NULL; p = p->next)
        if (strlen(p->node) == len && memcmp(p->node, node, len) == 0)
            return p;
    if (!create || len > NODE_MAX)
        return NULL;
    struct peer *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    memcpy(p->node, node, len);
    p->next = cl.peers;
    cl.peers = p;
    return p;
}

static ssize_t peer_find(const struct peer *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcasecmp(p->names[i], name) == 0)
            return (ssize_t)i;
    return -1;
}

static bool peer_add(struct peer *p, const char *name)
{
    if (peer_find(p, name) >= 0)
        return false;
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        void *n = realloc(p->names, cap * sizeof *p->names);
        if (n == NULL)
            return false;
        p->names = n;
        p->cap = cap;
    }
    snprintf(p->names[p->n++], MAX_NAME + 1, "%s", name);
    return true;
}

static bool peer_remove(struct peer *p, const char *name)
{
    ssize_t i = peer_find(p, name);
    if (i < 0)
        return false;
    memmove(p->names[i], p->names[i + 1], (p->n - (size_t)i - 1) * sizeof *p->names);
    p->n--;
    return true;
}

// Every user of P left (its node stopped, or went silent): told to the room, P forgotten.
static void peer_drop(struct peer *p, const char *why)
{
    rx_log(RX_LOG_INFO, "cluster: node %s %s: %zu user%s left", p->node, why, p->n,
           p->n == 1 ? "" : "s");
    for (size_t i = 0; i < p->n; i++)
        broadcast(NULL, "* %s left", p->names[i]);
    struct peer **pp = &cl.peers;
    while (*pp != p)
        pp = &(*pp)->next;
    *pp = p->next;
    free(p->names);
    free(p);
}

// The node (other than this one) whose roster holds NAME, or NULL.
static struct peer *remote_holder(const char *name)
{
    for (struct peer *p = cl.peers; p != NULL; p = p->next)
        if (peer_find(p, name) >= 0)
            return p;
    return NULL;
}

// ---------------------------------------------------------------- names

// The name a member gets on joining: 07's userN alone, "userN-NODE" in a cluster.
static void guest_name(struct member *m, char *out, size_t cap)
{
    if (cl.on)
        snprintf(out, cap, "user%" PRIu64 "-%s", m->guest, cl.node);
    else
        snprintf(out, cap, "user%" PRIu64, m->guest);
}

// M is now NAME: the room is told, the peers too, and M.
static void rename_to(struct member *m, const char *name)
{
    char old[MAX_NAME + 1];
    memcpy(old, m->name, sizeof old);
    broadcast(m, "* %s is now %s", old, name);
    snprintf(m->name, sizeof m->name, "%s", name);
    reply(m, "* you are now %s", name);
    cl_publish("N %s %s", old, name);
}

// Redis answered M's claim of its pending name: GRANTED or not.
static void claim_answered(struct member *m, const char *name, bool granted)
{
    if (m != NULL)
        m->pending[0] = '\0';
    if (m == NULL || m->state != M_OPEN) {
        // It left meanwhile: a name it got is released at once.
        if (granted) {
            rx_log(RX_LOG_INFO, "cluster: %s granted to a member that left: released", name);
            cl_release(name);
        }
        return;
    }
    if (!granted) {
        cl.refused++;
        reply(m, "* %s is taken", name);
        return;
    }
    cl.granted++;
    if (m->claimed)
        cl_release(m->name);
    m->claimed = true;
    rename_to(m, name);
}

// /nick NAME in a cluster, once the local checks passed. Whole: claim it with SET NX and wait;
// split: granted here (claimed again on return).
static void cl_nick(struct member *m, const char *name)
{
    if (m->pending[0] != '\0') {
        reply(m, "* wait: /nick %s is pending", m->pending);
        return;
    }
    if (remote_holder(name) != NULL) {
        cl.refused++;
        reply(m, "* %s is taken", name);
        return;
    }
    if (!cl.whole) {
        cl.granted++;
        m->claimed = false;  // the old one is released by its expiry, the new one claimed on return
        rename_to(m, name);
        m->claimed = true;
        return;
    }
    char key[sizeof CL_KEY + MAX_NAME], ttl[24];
    memcpy(key, CL_KEY, sizeof CL_KEY - 1);
    lower_copy(key + sizeof CL_KEY - 1, name);
    snprintf(ttl, sizeof ttl, "%" PRIu64, cl.ttl_ms);
    rx_resp_array(&cl.out, 6);
    rx_resp_bulk(&cl.out, "SET", 3);
    rx_resp_bulk(&cl.out, key, strlen(key));
    rx_resp_bulk(&cl.out, cl.node, strlen(cl.node));
    rx_resp_bulk(&cl.out, "NX", 2);
    rx_resp_bulk(&cl.out, "PX", 2);
    rx_resp_bulk(&cl.out, ttl, strlen(ttl));
    cl.claims++;
    if (cl_send(P_CLAIM, m->id, name))
        snprintf(m->pending, sizeof m->pending, "%s", name);
    else
        claim_answered(m, name, false);
}

// A refresh (or a claim again after a split) found NAME held by another node: the rule is
// that Redis's holder keeps it; M becomes its guest name again.
static void claim_lost(struct member *m, const char *name)
{
    if (m == NULL || m->state != M_OPEN || strcasecmp(m->name, name) != 0)
        return;
    cl.lost++;
    char guest[MAX_NAME + 1];
    guest_name(m, guest, sizeof guest);
    rx_log(RX_LOG_INFO, "cluster: %s is held by another node: member %" PRIu64 " is %s again",
           name, m->id, guest);
    reply(m, "* %s is taken on another node", name);
    m->claimed = false;
    rename_to(m, guest);
}

// ---------------------------------------------------------------- CMD's replies

static void *cl_create(void *arg, rx_session *s)
{
    (void)s;
    return arg;
}

static void cmd_opened(rx_session *s)
{
    rx_log(RX_LOG_INFO, "cluster: redis commands connected (%s:%d)", cl.host, cl.port);
    cl.cmd_s = s;
    cl_update();
}

static void cmd_message(rx_session *s, const rx_frame *f)
{
    struct pend *p = cl.head;
    if (p == NULL) {
        rx_log(RX_LOG_WARN, "cluster: a reply nobody asked for: closing");
        rx_session_close(s, false);
        return;
    }
    cl.head = p->next;
    if (cl.head == NULL)
        cl.tail = NULL;
    rx_resp_value v;
    bool got = rx_resp_values(f, &v, 1) >= 1;
    if (got && v.type == '-')
        rx_log(RX_LOG_WARN, "cluster: redis: %.*s", (int)v.len, v.p);
    switch (p->kind) {
    case P_CLAIM:
        claim_answered(member_by_id(p->id), p->name,
                       got && v.type == '+' && v.len == 2 && memcmp(v.p, "OK", 2) == 0);
        break;
    case P_REFRESH:
        if (got && v.type == ':' && v.integer == 0)
            claim_lost(member_by_id(p->id), p->name);
        break;
    case P_PUBLISH:
    case P_RELEASE:
        break;
    }
    free(p);
}

// CMD is gone: awaited claims are decided here, as during a split (they are claimed again on
// return); the connector reconnects by itself.
static void cmd_closed(rx_session *s, enum rx_close_reason why)
{
    (void)s;
    rx_log(RX_LOG_INFO, "cluster: redis commands disconnected (%s)", rx_close_reason_name(why));
    cl.cmd_s = NULL;
    cl_update();
    struct pend *p = cl.head;
    cl.head = cl.tail = NULL;
    while (p != NULL) {
        struct pend *next = p->next;
        if (p->kind == P_CLAIM) {
            struct member *m = member_by_id(p->id);
            if (m != NULL)
                m->pending[0] = '\0';
            if (m != NULL && m->state == M_OPEN) {
                struct member *h = name_holder(p->name);
                if (h != NULL && h != m)
                    claim_answered(m, p->name, false);
                else
                    claim_answered(m, p->name, true);
            }
        }
        free(p);
        p = next;
    }
}

// ---------------------------------------------------------------- SUB's messages

static void remote_message(const char *msg, size_t len);

static void sub_opened(rx_session *s)
{
    rx_log(RX_LOG_INFO, "cluster: redis subscriber connected (%s:%d)", cl.host, cl.port);
    rx_resp_reply r = {0};
    rx_resp_array(&r, 2);
    rx_resp_bulk(&r, "SUBSCRIBE", 9);
    rx_resp_bulk(&r, CL_CHANNEL, strlen(CL_CHANNEL));
    if (rx_resp_send(s, &r) != 0)
        rx_log(RX_LOG_WARN, "cluster: SUBSCRIBE not sent");
    rx_resp_reply_free(&r);
}

static void sub_message(rx_session *s, const rx_frame *f)
{
    (void)s;
    rx_resp_value v[4];
    size_t n = rx_resp_values(f, v, 4);
    if (n < 3 || v[0].type != '*' || v[1].type != '$') {
        rx_log(RX_LOG_WARN, "cluster: unexpected reply on the subscriber: %.40s", f->data);
        return;
    }
    if (v[1].len == 9 && memcmp(v[1].p, "subscribe", 9) == 0) {
        rx_log(RX_LOG_INFO, "cluster: subscribed to %s", CL_CHANNEL);
        cl.subscribed = true;
        cl_update();
    } else if (n == 4 && v[1].len == 7 && memcmp(v[1].p, "message", 7) == 0 && v[3].type == '$') {
        // While split (CMD not back yet) nothing is taken: the room is told whole first, then
        // every node's roster comes (S), then the lines.
        if (cl.whole)
            remote_message(v[3].p, v[3].len);
    }
}

static void sub_closed(rx_session *s, enum rx_close_reason why)
{
    (void)s;
    rx_log(RX_LOG_INFO, "cluster: redis subscriber disconnected (%s)", rx_close_reason_name(why));
    cl.subscribed = false;
    cl_update();
}

// The next space-separated word of [*P, END) into W (at most CAP - 1 bytes); false if none.
static bool word(const char **p, const char *end, char *w, size_t cap)
{
    const char *s = *p, *e = memchr(s, ' ', (size_t)(end - s));
    if (e == NULL)
        e = end;
    size_t n = (size_t)(e - s);
    if (n == 0 || n >= cap)
        return false;
    memcpy(w, s, n);
    w[n] = '\0';
    *p = e < end ? e + 1 : e;
    return true;
}

// One message of another node (or our own, skipped).
static void remote_message(const char *msg, size_t len)
{
    const char *p = msg, *end = msg + len;
    char node[NODE_MAX + 1], kind[2], a[MAX_NAME + 1], b[MAX_NAME + 1];
    if (!word(&p, end, node, sizeof node) || !word(&p, end, kind, sizeof kind)) {
        rx_log(RX_LOG_WARN, "cluster: a malformed message dropped");
        return;
    }
    if (strcmp(node, cl.node) == 0) {
        cl.own++;  // delivered here when it was sent
        return;
    }
    cl.received++;
    struct peer *peer = peer_get(node, strlen(node), true);
    if (peer == NULL)
        return;
    peer->heard_ms = rx_loop_now_ms(room.loop);
    switch (kind[0]) {
    case 'L':
        if (word(&p, end, a, sizeof a)) {
            cl.remote_lines++;
            broadcast(NULL, "%s: %.*s", a, (int)(end - p), p);
        }
        break;
    case 'M':
        if (word(&p, end, a, sizeof a) && word(&p, end, b, sizeof b)) {
            struct member *to = find_in_room(a);
            if (to != NULL)
                reply(to, "%s (private): %.*s", b, (int)(end - p), p);
        }
        break;
    case 'J':
        if (word(&p, end, a, sizeof a) && peer_add(peer, a))
            broadcast(NULL, "* %s joined", a);
        break;
    case 'Q':
    case 'D':
        if (word(&p, end, a, sizeof a) && peer_remove(peer, a))
            broadcast(NULL, kind[0] == 'D' ? "* %s dropped (too slow)" : "* %s left", a);
        break;
    case 'N':
        if (word(&p, end, a, sizeof a) && word(&p, end, b, sizeof b)) {
            peer_remove(peer, a);
            peer_add(peer, b);
            broadcast(NULL, "* %s is now %s", a, b);
        }
        break;
    case 'H': {
        // The roster as the node has it: the difference from ours is announced (not at the
        // first H of a node: its members were there before we heard of them).
        struct peer now = {0};
        while (p < end && word(&p, end, a, sizeof a))
            peer_add(&now, a);
        for (size_t i = 0; peer->synced && i < peer->n; i++)
            if (peer_find(&now, peer->names[i]) < 0)
                broadcast(NULL, "* %s left", peer->names[i]);
        for (size_t i = 0; peer->synced && i < now.n; i++)
            if (peer_find(peer, now.names[i]) < 0)
                broadcast(NULL, "* %s joined", now.names[i]);
        peer->synced = true;
        free(peer->names);
        peer->names = now.names;
        peer->n = now.n;
        peer->cap = now.cap;
        break;
    }
    case 'S':
        cl_publish_roster();
        break;
    case 'B':
        peer_drop(peer, "stopped");
        break;
    default:
        rx_log(RX_LOG_WARN, "cluster: unknown message kind '%s' from %s", kind, node);
    }
}

// ---------------------------------------------------------------- whole and split

// Every OPEN member gets TEXT (a notice: never what drops it).
static void tell_all(const char *text)
{
    for (struct member *m = room.head; m != NULL; m = m->next)
        if (m->state == M_OPEN)
            notice(m, text);
}

#define SPLIT_NOTICE "* room split: other nodes unreachable, lines reach this node only"
#define WHOLE_NOTICE "* room whole again"

// Every held name refreshed (claimed again after a split); the heartbeat.
static void cl_refresh_all(void)
{
    for (struct member *m = room.head; m != NULL; m = m->next)
        if (m->state == M_OPEN && m->claimed)
            cl_eval(CL_REFRESH, P_REFRESH, m->id, m->name);
    cl_publish_roster();
}

// Judges whole or split from the two sessions; tells the room once per change.
static void cl_update(void)
{
    bool whole = cl.cmd_s != NULL && cl.subscribed && !room.stopping;
    if (whole == cl.whole)
        return;
    cl.whole = whole;
    if (whole) {
        cl.wholes++;
        rx_log(RX_LOG_INFO, "cluster: room whole (node %s, redis %s:%d)", cl.node, cl.host,
               cl.port);
        if (cl.ever_whole)
            tell_all(WHOLE_NOTICE);
        cl.ever_whole = true;
        // Peers get a whole ttl to be heard again; the names are claimed again; everyone
        // is asked for a roster.
        uint64_t now = rx_loop_now_ms(room.loop);
        for (struct peer *p = cl.peers; p != NULL; p = p->next)
            p->heard_ms = now;
        cl_refresh_all();
        cl_publish("S");
    } else if (!room.stopping) {
        cl.splits++;
        rx_log(RX_LOG_WARN, "cluster: room split (redis %s:%d unreachable): local service only",
               cl.host, cl.port);
        tell_all(SPLIT_NOTICE);
    }
}

// Every ttl/3: names refreshed, the heartbeat, silent peers expired (only while whole: during
// a split nobody is heard).
static void cl_beat(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)t;
    (void)arg;
    if (!cl.whole)
        return;
    cl_refresh_all();
    uint64_t now = rx_loop_now_ms(loop);
    struct peer *p = cl.peers;
    while (p != NULL) {
        struct peer *next = p->next;
        if (now - p->heard_ms >= cl.ttl_ms) {
            cl.expired++;
            peer_drop(p, "silent");
        }
        p = next;
    }
}

// ---------------------------------------------------------------- hooks of the room

static void cl_joined(struct member *m)
{
    if (!cl.on)
        return;
    cl_publish("J %s", m->name);
    if (cl.ever_whole && !cl.whole)
        notice(m, SPLIT_NOTICE);
}

static void cl_left(struct member *m)
{
    if (!cl.on)
        return;
    cl_publish("%c %s", m->why == LEFT_SLOW ? 'D' : 'Q', m->name);
    if (m->claimed)
        cl_release(m->name);
    m->claimed = false;
}

static void cl_line(struct member *m, const char *text, size_t n)
{
    if (cl.on)
        cl_publish("L %s %.*s", m->name, (int)n, text);
}

// The shutdown: peers are told at once (B), the names released.
static void cl_stop(void)
{
    if (!cl.on)
        return;
    if (cl.whole) {
        for (struct member *m = room.head; m != NULL; m = m->next)
            if (m->claimed)
                cl_release(m->name);
        cl_publish("B");
    }
    if (cl.beat != NULL) {
        rx_timer_stop(room.loop, cl.beat);
        cl.beat = NULL;
    }
}

// Starts the two connectors and the beat. 0, or -1 (out of memory).
static int cl_start(void)
{
    rx_connect_opts o = rx_connect_opts_default();
    o.retry_ms = 100;
    o.retry_max_ms = 2000;
    o.timeout_ms = 1000;
    rx_codec resp = rx_codec_resp_reply(CL_MAX_REPLY);
    rx_factory sf = {.arg = &cl, .create = cl_create, .opened = sub_opened,
                     .message = sub_message, .closed = sub_closed};
    rx_factory cf = {.arg = &cl, .create = cl_create, .opened = cmd_opened,
                     .message = cmd_message, .closed = cmd_closed};
    cl.sub = rx_connect(room.srv, cl.host, cl.port, &resp, &sf, &o);
    cl.cmd = rx_connect(room.srv, cl.host, cl.port, &resp, &cf, &o);
    uint64_t every = cl.ttl_ms / 3 ? cl.ttl_ms / 3 : 1;
    cl.beat = rx_timer_start(room.loop, every, every, cl_beat, NULL);
    if (cl.sub == NULL || cl.cmd == NULL || cl.beat == NULL)
        return -1;
    rx_log(RX_LOG_INFO, "cluster: node %s, redis %s:%d, name ttl %" PRIu64 " ms", cl.node,
           cl.host, cl.port, cl.ttl_ms);
    return 0;
}

static void cl_free(void)
{
    if (!cl.on)
        return;
    if (cl.sub != NULL)
        rx_connector_free(cl.sub);
    if (cl.cmd != NULL)
        rx_connector_free(cl.cmd);
    while (cl.head != NULL) {
        struct pend *p = cl.head;
        cl.head = p->next;
        free(p);
    }
    while (cl.peers != NULL) {
        struct peer *p = cl.peers;
        cl.peers = p->next;
        free(p->names);
        free(p);
    }
    rx_resp_reply_free(&cl.out);
    rx_log(RX_LOG_INFO,
           "cluster: stopped after %" PRIu64 " published, %" PRIu64 " received, %" PRIu64
           " own skipped, %" PRIu64 " remote lines, %" PRIu64 " claims, %" PRIu64
           " granted, %" PRIu64 " refused, %" PRIu64 " lost, %" PRIu64 " splits, %" PRIu64
           " wholes, %" PRIu64 " expired",
           cl.published, cl.received, cl.own, cl.remote_lines, cl.claims, cl.granted, cl.refused,
           cl.lost, cl.splits, cl.wholes, cl.expired);
}

#endif
