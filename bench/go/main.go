// Command loader is the benchmark's second load generator, written apart from bench/loader.ts and
// not tuned to the server: gorilla/websocket clients, one goroutine reading each socket.
//
// It speaks bench/loader.ts's protocol, so the harness drives either the same way: the first
// argument is a LoaderSpec (JSON); commands arrive on stdin, one JSON object a line (connect,
// start, mark, peek, report, pause, stop), and events leave on stdout (connected, report, peeked,
// paused, error). Modes: rate and paced (messages on a clock spread over the senders), closed (a
// sender's next message when its last one comes back) and idle; not flood.
//
// Every client counts the chat messages it receives (occurrences of "type":"message", so a
// parley.v1 batch frame counts each event); senders and every sampleEvery-th client also read
// each message's content, "<client>|<seq>|<sent at, ms since the epoch>|xxx…", for its latency.
//
// Build (offline, Debian's packages):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o loader .
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// How often the rate clock sends what is due.
	tickInterval = 5 * time.Millisecond
	// A closed-loop message not back after this long is sent again.
	resendAfter = 5 * time.Second
	// Most latency samples one report holds.
	maxSamples = 1_000_000
	// Messages a sender may have waiting for its socket before the clock blocks on it.
	sendQueue       = 1 << 14
	connectAttempts = 3
	welcomeTimeout  = 60 * time.Second
)

var (
	typeMessage = []byte(`"type":"message"`)
	contentKey  = []byte(`"content":"`)
)

type spec struct {
	ID           int     `json:"id"`
	Hostname     string  `json:"hostname"`
	Port         int     `json:"port"`
	Protocol     string  `json:"protocol"`
	Clients      int     `json:"clients"`
	Offset       int     `json:"offset"`
	Senders      int     `json:"senders"`
	Mode         string  `json:"mode"`
	Rate         float64 `json:"rate"`
	SampleEvery  int     `json:"sampleEvery"`
	ContentChars int     `json:"contentChars"`
	WaitWelcome  bool    `json:"waitWelcome"`
	Concurrency  int     `json:"concurrency"`
	BufferBytes  int     `json:"bufferBytes"`
}

type sender struct {
	index    int
	conn     *websocket.Conn
	queue    chan []byte
	seq      atomic.Int64
	awaiting atomic.Int64
	sentAt   atomic.Int64 // UnixNano
}

type loader struct {
	spec    spec
	padding string

	mu        sync.Mutex // guards everything below it
	conns     []*websocket.Conn
	senders   []*sender
	byIndex   map[int]*sender
	protocols map[string]int
	closes    map[string]int
	failed    int
	latencies []float64
	dropped   int
	markedAt  time.Time
	maxDue    int
	stopClock chan struct{}

	measuring atomic.Bool
	sending   atomic.Bool
	delivered atomic.Int64
	sent      atomic.Int64
	resends   atomic.Int64
	open      atomic.Int64

	out sync.Mutex
}

func emit(l *loader, event map[string]any) {
	line, _ := json.Marshal(event)
	l.out.Lock()
	os.Stdout.Write(append(line, '\n'))
	l.out.Unlock()
}

func nowMs() float64 { return float64(time.Now().UnixNano()) / 1e6 }

// grow connects clients until the loader holds total, then says so.
func (l *loader) grow(total int) {
	l.mu.Lock()
	next := len(l.conns) + l.failed
	l.mu.Unlock()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < max(1, l.spec.Concurrency); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for local := range jobs {
				l.connect(local)
			}
		}()
	}
	for local := next; local < total; local++ {
		jobs <- local
	}
	close(jobs)
	wg.Wait()
	l.mu.Lock()
	event := map[string]any{"ev": "connected", "clients": len(l.conns), "failed": l.failed,
		"protocols": l.protocols}
	l.mu.Unlock()
	emit(l, event)
}

func (l *loader) connect(local int) {
	s := l.spec
	index := s.Offset + local
	isSender := local < s.Senders
	timed := (isSender && (s.Mode == "rate" || s.Mode == "closed")) || index%s.SampleEvery == 0
	dialer := websocket.Dialer{
		ReadBufferSize:   s.BufferBytes,
		WriteBufferSize:  4096,
		HandshakeTimeout: welcomeTimeout,
	}
	if s.Protocol != "" {
		dialer.Subprotocols = []string{s.Protocol}
	}
	url := fmt.Sprintf("ws://%s:%d/ws?name=c%d", s.Hostname, s.Port, index)
	var err error
	for attempt := 1; attempt <= connectAttempts; attempt++ {
		var conn *websocket.Conn
		conn, _, err = dialer.Dial(url, nil)
		if err == nil && s.WaitWelcome {
			conn.SetReadDeadline(time.Now().Add(welcomeTimeout))
			_, _, err = conn.ReadMessage()
			conn.SetReadDeadline(time.Time{})
			if err != nil {
				conn.Close()
			}
		}
		if err == nil {
			var snd *sender
			if isSender {
				snd = &sender{index: index, conn: conn, queue: make(chan []byte, sendQueue)}
				snd.awaiting.Store(-1)
				go l.write(snd)
			}
			protocol := conn.Subprotocol()
			if protocol == "" {
				protocol = "none"
			}
			l.mu.Lock()
			l.conns = append(l.conns, conn)
			l.protocols[protocol]++
			if snd != nil {
				l.senders = append(l.senders, snd)
				l.byIndex[index] = snd
			}
			l.mu.Unlock()
			l.open.Add(1)
			go l.read(conn, timed, snd)
			return
		}
		time.Sleep(time.Duration(100*attempt) * time.Millisecond)
	}
	l.mu.Lock()
	l.failed++
	l.mu.Unlock()
	emit(l, map[string]any{"ev": "error", "message": fmt.Sprintf("client %d: %v", index, err)})
}

// read counts (and, when timed, times) what one socket receives until it closes.
func (l *loader) read(conn *websocket.Conn, timed bool, own *sender) {
	buf := make([]byte, 0, 4096)
	var samples []float64
	for {
		kind, r, err := conn.NextReader()
		if err != nil {
			code := "1006"
			var closeErr *websocket.CloseError
			if errors.As(err, &closeErr) {
				code = strconv.Itoa(closeErr.Code)
			}
			l.mu.Lock()
			l.closes[code]++
			l.mu.Unlock()
			l.open.Add(-1)
			return
		}
		if kind != websocket.TextMessage {
			continue
		}
		buf, err = readAll(r, buf[:0])
		if err != nil {
			continue
		}
		if !timed {
			if l.measuring.Load() {
				l.delivered.Add(int64(bytes.Count(buf, typeMessage)))
			}
			continue
		}
		now := nowMs()
		samples = samples[:0]
		rest := buf
		for {
			at := bytes.Index(rest, typeMessage)
			if at < 0 {
				break
			}
			rest = rest[at+len(typeMessage):]
			c := bytes.Index(rest, contentKey)
			if c < 0 {
				break
			}
			rest = rest[c+len(contentKey):]
			end := bytes.IndexByte(rest, '"')
			if end < 0 {
				break
			}
			parts := strings.SplitN(string(rest[:end]), "|", 4)
			if len(parts) < 3 {
				continue
			}
			sentAt, _ := strconv.ParseFloat(parts[2], 64)
			samples = append(samples, now-sentAt)
			if own != nil && l.spec.Mode == "closed" && l.sending.Load() {
				from, _ := strconv.Atoi(parts[0])
				seq, _ := strconv.ParseInt(parts[1], 10, 64)
				if from == own.index && seq == own.awaiting.Load() {
					l.send(own)
				}
			}
		}
		if l.measuring.Load() && len(samples) > 0 {
			l.delivered.Add(int64(len(samples)))
			l.mu.Lock()
			for _, ms := range samples {
				if len(l.latencies) < maxSamples {
					l.latencies = append(l.latencies, float64(int64(ms*1000+0.5))/1000)
				} else {
					l.dropped++
				}
			}
			l.mu.Unlock()
		}
	}
}

func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// send stamps the sender's next message and queues it for its writer.
func (l *loader) send(s *sender) {
	seq := s.seq.Add(1) - 1
	at := time.Now()
	content := fmt.Sprintf("%d|%d|%.3f|", s.index, seq, float64(at.UnixNano())/1e6)
	if len(content) < len(l.padding) {
		content += l.padding[len(content):]
	}
	s.awaiting.Store(seq)
	s.sentAt.Store(at.UnixNano())
	s.queue <- []byte(`{"sender":"c` + strconv.Itoa(s.index) + `","content":"` + content + `"}`)
	if l.measuring.Load() {
		l.sent.Add(1)
	}
}

// write is the only writer of a sender's socket besides gorilla's own control frames.
func (l *loader) write(s *sender) {
	for frame := range s.queue {
		if s.conn.WriteMessage(websocket.TextMessage, frame) != nil {
			return
		}
	}
}

func (l *loader) start() {
	if l.spec.Mode == "idle" || l.sending.Swap(true) {
		return
	}
	l.mu.Lock()
	senders := append([]*sender(nil), l.senders...)
	stop := make(chan struct{})
	l.stopClock = stop
	l.mu.Unlock()
	if len(senders) == 0 {
		return
	}
	if l.spec.Mode == "closed" {
		for _, s := range senders {
			l.send(s)
		}
		go func() {
			ticker := time.NewTicker(time.Second)
			defer ticker.Stop()
			for {
				select {
				case <-stop:
					return
				case <-ticker.C:
					for _, s := range senders {
						if time.Since(time.Unix(0, s.sentAt.Load())) > resendAfter {
							l.resends.Add(1)
							l.send(s)
						}
					}
				}
			}
		}()
		return
	}
	go func() {
		started := time.Now()
		done, turn := 0, 0
		ticker := time.NewTicker(tickInterval)
		defer ticker.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ticker.C:
				due := int(time.Since(started).Seconds() * l.spec.Rate)
				if l.measuring.Load() {
					perSender := (due - done + len(senders) - 1) / len(senders)
					l.mu.Lock()
					l.maxDue = max(l.maxDue, perSender)
					l.mu.Unlock()
				}
				for ; done < due; done++ {
					l.send(senders[turn%len(senders)])
					turn++
				}
			}
		}
	}()
}

func (l *loader) pause() {
	l.sending.Store(false)
	l.mu.Lock()
	if l.stopClock != nil {
		close(l.stopClock)
		l.stopClock = nil
	}
	l.mu.Unlock()
}

func (l *loader) mark() {
	l.mu.Lock()
	l.markedAt = time.Now()
	l.latencies = nil
	l.dropped = 0
	l.maxDue = 0
	l.delivered.Store(0)
	l.sent.Store(0)
	l.resends.Store(0)
	l.measuring.Store(true)
	l.mu.Unlock()
}

func (l *loader) report() map[string]any {
	l.measuring.Store(false)
	l.mu.Lock()
	defer l.mu.Unlock()
	latencies := l.latencies
	if latencies == nil {
		latencies = []float64{}
	}
	l.latencies = nil
	return map[string]any{
		"windowMs":          float64(time.Since(l.markedAt).Microseconds()) / 1000,
		"sent":              l.sent.Load(),
		"delivered":         l.delivered.Load(),
		"latencies":         latencies,
		"droppedSamples":    l.dropped,
		"open":              l.open.Load(),
		"closes":            l.closes,
		"resends":           l.resends.Load(),
		"maxDuePerSender":   l.maxDue,
		"backloggedSenders": 0,
	}
}

func max(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func main() {
	l := &loader{byIndex: map[int]*sender{}, protocols: map[string]int{}, closes: map[string]int{}}
	if len(os.Args) < 2 || json.Unmarshal([]byte(os.Args[1]), &l.spec) != nil {
		fmt.Fprintln(os.Stderr, "usage: loader '<LoaderSpec JSON>'")
		os.Exit(2)
	}
	if l.spec.Mode == "flood" {
		emit(l, map[string]any{"ev": "error", "message": "flood mode is not supported"})
		os.Exit(1)
	}
	if l.spec.SampleEvery < 1 {
		l.spec.SampleEvery = 1
	}
	l.padding = strings.Repeat("x", l.spec.ContentChars)
	l.grow(l.spec.Clients)
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		var command struct {
			Cmd     string `json:"cmd"`
			Clients int    `json:"clients"`
		}
		if json.Unmarshal(lines.Bytes(), &command) != nil {
			continue
		}
		switch command.Cmd {
		case "connect":
			l.grow(command.Clients)
		case "start":
			l.start()
		case "mark":
			l.mark()
		case "peek":
			emit(l, map[string]any{"ev": "peeked", "delivered": l.delivered.Load()})
		case "report":
			emit(l, map[string]any{"ev": "report", "report": l.report()})
		case "pause":
			l.pause()
			emit(l, map[string]any{"ev": "paused"})
		case "stop":
			l.pause()
			os.Exit(0)
		}
	}
}
