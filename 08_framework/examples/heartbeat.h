// heartbeat.h: the heartbeat protocol both heartbeat_server and heartbeat_client speak, and the
// one piece of logic they share: a repeating timer that sends PING and counts missed PONGs.
// Header-only (static inline), like options.h: each example stays one .c file the Makefile
// links alone.
//
// Frames are the library's header codec, {u32 big-endian length, u16 big-endian type, body}:
//
//   type  name  body                               the receiver
//   1     PING  8 bytes: the sender's sequence     answers PONG with the same 8 bytes
//   2     PONG  8 bytes: the PING's sequence       counts it if it answers its latest PING
//   3     DATA  0 to --max-frame bytes             server: sends it back as DATA; client: checks it
//
// Any other type, or a PING or PONG whose body is not 8 bytes, is a bad frame: the session is
// closed at once with a log line naming it. A length over --max-frame is refused by the codec
// itself (the library logs "closed: bad frame").
#ifndef EXAMPLES_HEARTBEAT_H
#define EXAMPLES_HEARTBEAT_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "rx.h"

enum hb_type { HB_PING = 1, HB_PONG = 2, HB_DATA = 3, HB_NTYPES };
#define HB_SEQ_LEN 8
// Missed heartbeats in a row that close the connection. A heartbeat is missed when the PING
// sent one interval ago has had no PONG by the next tick: so a peer that stops answering is
// closed 3 intervals after the first PING it left unanswered, having received 3 such PINGs.
#define HB_MISSES 3

static const char *const hb_type_name[HB_NTYPES] = {"?", "PING", "PONG", "DATA"};

// What one program sent and received, by type, and why sessions ended.
struct hb_counts {
    uint64_t in[HB_NTYPES], out[HB_NTYPES];
    uint64_t timeouts;    // sessions closed for HB_MISSES missed heartbeats
    uint64_t bad_frames;  // sessions closed for a bad type or body length
};

// One session's heartbeat. Main thread only, like every callback.
struct hb_peer {
    rx_session *s;
    rx_loop *loop;
    rx_timer *timer;      // repeating, every interval; stopped in hb_stop (the `closed` callback)
    struct hb_counts *counts;
    uint64_t interval_ms;
    uint64_t seq;         // the sequence of the latest PING sent
    bool awaiting;        // that PING has had no PONG yet
    unsigned misses;      // heartbeats missed in a row
};

static inline void hb_put_seq(unsigned char *b, uint64_t seq)
{
    for (int i = HB_SEQ_LEN - 1; i >= 0; i--, seq >>= 8)
        b[i] = (unsigned char)seq;
}

static inline uint64_t hb_get_seq(const char *p)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t seq = 0;
    for (int i = 0; i < HB_SEQ_LEN; i++)
        seq = seq << 8 | b[i];
    return seq;
}

// Frames and queues one message; counted only when the library took it.
static inline int hb_send(struct hb_peer *p, enum hb_type type, const void *body, size_t len)
{
    if (rx_send_typed(p->s, type, body, len) != 0) {
        rx_log(RX_LOG_DEBUG, "session %" PRIu64 ": %s not sent (closing)", rx_session_id(p->s),
               hb_type_name[type]);
        return -1;
    }
    p->counts->out[type]++;
    return 0;
}

static inline void hb_send_ping(struct hb_peer *p)
{
    unsigned char b[HB_SEQ_LEN];
    hb_put_seq(b, ++p->seq);
    if (hb_send(p, HB_PING, b, sizeof b) == 0)
        p->awaiting = true;
}

// The timer: first judge the PING of the last tick, then send the next one.
static inline void hb_tick(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    struct hb_peer *p = arg;
    if (rx_session_closing(p->s))
        return;  // its `closed` callback, which stops this timer, is on its way
    if (p->awaiting && ++p->misses >= HB_MISSES) {
        rx_log(RX_LOG_INFO, "session %" PRIu64 " (%s): no PONG to %u PINGs in a row (interval %" PRIu64
               " ms): closing", rx_session_id(p->s), rx_session_peer(p->s), p->misses, p->interval_ms);
        p->counts->timeouts++;
        rx_session_close(p->s, false);  // the peer is not reading: nothing to flush to it
        return;
    }
    hb_send_ping(p);
}

// From the `opened` callback: the first PING now, then one every interval. Returns -1 (and
// closes the session) when out of memory for the timer.
static inline int hb_start(struct hb_peer *p, rx_session *s, rx_loop *loop, uint64_t interval_ms,
                           struct hb_counts *counts)
{
    *p = (struct hb_peer){.s = s, .loop = loop, .counts = counts, .interval_ms = interval_ms};
    p->timer = rx_timer_start(loop, interval_ms, interval_ms, hb_tick, p);
    if (!p->timer) {
        rx_log(RX_LOG_ERROR, "session %" PRIu64 ": out of memory for its heartbeat timer: closing",
               rx_session_id(s));
        rx_session_close(s, false);
        return -1;
    }
    hb_send_ping(p);
    return 0;
}

// From the `closed` callback: the timer goes with the session (its argument is about to be
// freed; a tick after this would touch freed memory).
static inline void hb_stop(struct hb_peer *p)
{
    if (p->timer) {
        rx_timer_stop(p->loop, p->timer);
        p->timer = NULL;
    }
}

// Closes the session for a bad frame, saying why.
static inline void hb_bad_frame(struct hb_peer *p, const rx_frame *f, const char *why)
{
    rx_log(RX_LOG_INFO, "session %" PRIu64 " (%s): bad frame: %s (type 0x%04x, %zu bytes): closing",
           rx_session_id(p->s), rx_session_peer(p->s), why, (unsigned)f->type, f->len);
    p->counts->bad_frames++;
    rx_session_close(p->s, false);
}

// From the `message` callback: PING and PONG handled here, bad frames refused. Returns true
// for a DATA frame, which is the caller's.
static inline bool hb_message(struct hb_peer *p, const rx_frame *f)
{
    if (f->type != HB_PING && f->type != HB_PONG && f->type != HB_DATA) {
        hb_bad_frame(p, f, "unknown type");
        return false;
    }
    if (f->type != HB_DATA && f->len != HB_SEQ_LEN) {
        hb_bad_frame(p, f, f->type == HB_PING ? "PING body is not 8 bytes" : "PONG body is not 8 bytes");
        return false;
    }
    p->counts->in[f->type]++;
    if (f->type == HB_PING) {
        hb_send(p, HB_PONG, f->data, f->len);
    } else if (f->type == HB_PONG) {
        // Only the answer to the latest PING proves the peer keeps up; a late one for an older
        // PING does not.
        if (p->awaiting && hb_get_seq(f->data) == p->seq) {
            p->awaiting = false;
            p->misses = 0;
        } else {
            rx_log(RX_LOG_DEBUG, "session %" PRIu64 ": PONG %" PRIu64 " is not for PING %" PRIu64 ": ignored",
                   rx_session_id(p->s), hb_get_seq(f->data), p->seq);
        }
    }
    return f->type == HB_DATA;
}

#endif
