// Package eventstream reads and writes AWS's binary application/vnd.amazon.eventstream framing,
// which Bedrock ConverseStream uses (reference providers.md §4.6). Every integer is big-endian;
// a frame is
//
//	total_length uint32 | headers_length uint32 | prelude_crc uint32 | headers | payload | message_crc uint32
//
// with both CRCs CRC-32/IEEE. The decoder reads frames one at a time from an io.Reader, handles
// frames split across reads, verifies both checksums and never allocates more than its frame
// limit. A prelude checksum mismatch means framing is lost: the decoder fails for good and never
// resynchronises by scanning.
package eventstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// DefaultMaxFrame bounds one frame (16 MiB), checked before anything is allocated.
const DefaultMaxFrame = 16 << 20

const (
	preludeLen = 12
	overhead   = 16 // prelude (12) + message CRC (4)
)

// Header value types (the byte after a header name).
const (
	TypeBoolTrue  = 0
	TypeBoolFalse = 1
	TypeByte      = 2
	TypeInt16     = 3
	TypeInt32     = 4
	TypeInt64     = 5
	TypeBytes     = 6
	TypeString    = 7
	TypeTimestamp = 8
	TypeUUID      = 9
)

// Errors returned by the decoder. All of them are final.
var (
	ErrPreludeCRC    = errors.New("eventstream: prelude checksum mismatch")
	ErrMessageCRC    = errors.New("eventstream: message checksum mismatch")
	ErrFrameTooLarge = errors.New("eventstream: frame exceeds size limit")
	ErrMalformed     = errors.New("eventstream: malformed frame")
)

// Header is one decoded header. String holds the value of string headers (type 7); Value holds
// the raw value bytes of every other type.
type Header struct {
	Name   string
	Type   byte
	String string
	Value  []byte
}

// Message is one decoded frame. Payload aliases the decoder's buffer: it is valid until the next
// call to Next.
type Message struct {
	Headers []Header
	Payload []byte
}

// Get returns the string value of the named string header, or "".
func (m *Message) Get(name string) string {
	for i := range m.Headers {
		if m.Headers[i].Name == name && m.Headers[i].Type == TypeString {
			return m.Headers[i].String
		}
	}
	return ""
}

// MessageType is the :message-type header: event, exception or error.
func (m *Message) MessageType() string { return m.Get(":message-type") }

// EventType is the :event-type header of an event frame (e.g. contentBlockDelta).
func (m *Message) EventType() string { return m.Get(":event-type") }

// ExceptionType is the :exception-type header of an exception frame (e.g. throttlingException).
func (m *Message) ExceptionType() string { return m.Get(":exception-type") }

// Decoder reads frames from a stream.
type Decoder struct {
	r   io.Reader
	max int
	buf []byte
	err error
	msg Message
}

// NewDecoder reads frames from r with the default size limit.
func NewDecoder(r io.Reader) *Decoder { return NewDecoderSize(r, DefaultMaxFrame) }

// NewDecoderSize reads frames from r, failing on any frame larger than max bytes.
func NewDecoderSize(r io.Reader, max int) *Decoder {
	if max < overhead {
		max = overhead
	}
	return &Decoder{r: r, max: max}
}

// Next returns the next frame. At a clean end of input (between frames) it returns io.EOF; a
// stream that ends inside a frame yields io.ErrUnexpectedEOF. After any error every later call
// returns the same error. The returned message is valid until the next call.
func (d *Decoder) Next() (*Message, error) {
	if d.err != nil {
		return nil, d.err
	}
	msg, err := d.next()
	if err != nil {
		d.err = err
		return nil, err
	}
	return msg, nil
}

func (d *Decoder) next() (*Message, error) {
	if cap(d.buf) < preludeLen {
		d.buf = make([]byte, preludeLen, 4096)
	}
	prelude := d.buf[:preludeLen]
	if _, err := io.ReadFull(d.r, prelude); err != nil {
		return nil, err // io.EOF at a boundary, io.ErrUnexpectedEOF inside the prelude
	}
	total := binary.BigEndian.Uint32(prelude[0:4])
	hlen := binary.BigEndian.Uint32(prelude[4:8])
	if crc32.ChecksumIEEE(prelude[0:8]) != binary.BigEndian.Uint32(prelude[8:12]) {
		return nil, ErrPreludeCRC
	}
	if total < overhead || uint64(hlen) > uint64(total)-overhead {
		return nil, fmt.Errorf("%w: total length %d, headers length %d", ErrMalformed, total, hlen)
	}
	if uint64(total) > uint64(d.max) {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, total)
	}
	n := int(total)
	if cap(d.buf) < n {
		nb := make([]byte, n)
		copy(nb, prelude)
		d.buf = nb
	}
	frame := d.buf[:n]
	if _, err := io.ReadFull(d.r, frame[preludeLen:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if crc32.ChecksumIEEE(frame[:n-4]) != binary.BigEndian.Uint32(frame[n-4:]) {
		return nil, ErrMessageCRC
	}
	headers := frame[preludeLen : preludeLen+int(hlen)]
	d.msg.Headers = d.msg.Headers[:0]
	var err error
	d.msg.Headers, err = parseHeaders(d.msg.Headers, headers)
	if err != nil {
		return nil, err
	}
	d.msg.Payload = frame[preludeLen+int(hlen) : n-4]
	return &d.msg, nil
}

// parseHeaders decodes the headers section. Values of non-string types are kept raw.
func parseHeaders(dst []Header, b []byte) ([]Header, error) {
	for len(b) > 0 {
		nl := int(b[0])
		if nl == 0 || len(b) < 1+nl+1 {
			return dst, fmt.Errorf("%w: truncated header name", ErrMalformed)
		}
		name := string(b[1 : 1+nl])
		typ := b[1+nl]
		b = b[2+nl:]
		var size int
		switch typ {
		case TypeBoolTrue, TypeBoolFalse:
			size = 0
		case TypeByte:
			size = 1
		case TypeInt16:
			size = 2
		case TypeInt32:
			size = 4
		case TypeInt64, TypeTimestamp:
			size = 8
		case TypeUUID:
			size = 16
		case TypeBytes, TypeString:
			if len(b) < 2 {
				return dst, fmt.Errorf("%w: truncated header %q", ErrMalformed, name)
			}
			size = int(binary.BigEndian.Uint16(b))
			b = b[2:]
		default:
			return dst, fmt.Errorf("%w: header %q has unknown type %d", ErrMalformed, name, typ)
		}
		if len(b) < size {
			return dst, fmt.Errorf("%w: truncated header %q", ErrMalformed, name)
		}
		h := Header{Name: name, Type: typ}
		if typ == TypeString {
			h.String = string(b[:size])
		} else {
			h.Value = b[:size:size]
		}
		dst = append(dst, h)
		b = b[size:]
	}
	return dst, nil
}

// StringHeader is a convenience constructor for a string header.
func StringHeader(name, value string) Header {
	return Header{Name: name, Type: TypeString, String: value}
}

// AppendMessage appends one encoded frame to dst. String headers take their value from String,
// every other type from Value (whose length must match the type).
func AppendMessage(dst []byte, headers []Header, payload []byte) ([]byte, error) {
	hlen := 0
	for _, h := range headers {
		if len(h.Name) == 0 || len(h.Name) > 255 {
			return dst, fmt.Errorf("eventstream: header name %q must be 1..255 bytes", h.Name)
		}
		hlen += 2 + len(h.Name)
		switch h.Type {
		case TypeString:
			if len(h.String) > 0xffff {
				return dst, fmt.Errorf("eventstream: header %q value too long", h.Name)
			}
			hlen += 2 + len(h.String)
		case TypeBytes:
			if len(h.Value) > 0xffff {
				return dst, fmt.Errorf("eventstream: header %q value too long", h.Name)
			}
			hlen += 2 + len(h.Value)
		default:
			if want, ok := fixedSize(h.Type); !ok || want != len(h.Value) {
				return dst, fmt.Errorf("eventstream: header %q has type %d and a %d-byte value", h.Name, h.Type, len(h.Value))
			}
			hlen += len(h.Value)
		}
	}
	total := overhead + hlen + len(payload)
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, uint32(total))
	dst = binary.BigEndian.AppendUint32(dst, uint32(hlen))
	dst = binary.BigEndian.AppendUint32(dst, crc32.ChecksumIEEE(dst[start:start+8]))
	for _, h := range headers {
		dst = append(dst, byte(len(h.Name)))
		dst = append(dst, h.Name...)
		dst = append(dst, h.Type)
		switch h.Type {
		case TypeString:
			dst = binary.BigEndian.AppendUint16(dst, uint16(len(h.String)))
			dst = append(dst, h.String...)
		case TypeBytes:
			dst = binary.BigEndian.AppendUint16(dst, uint16(len(h.Value)))
			dst = append(dst, h.Value...)
		default:
			dst = append(dst, h.Value...)
		}
	}
	dst = append(dst, payload...)
	return binary.BigEndian.AppendUint32(dst, crc32.ChecksumIEEE(dst[start:])), nil
}

func fixedSize(t byte) (int, bool) {
	switch t {
	case TypeBoolTrue, TypeBoolFalse:
		return 0, true
	case TypeByte:
		return 1, true
	case TypeInt16:
		return 2, true
	case TypeInt32:
		return 4, true
	case TypeInt64, TypeTimestamp:
		return 8, true
	case TypeUUID:
		return 16, true
	}
	return 0, false
}

// AppendEvent appends a Bedrock-style event frame: :event-type, :content-type
// application/json, :message-type event.
func AppendEvent(dst []byte, eventType string, payload []byte) []byte {
	out, _ := AppendMessage(dst, []Header{
		StringHeader(":event-type", eventType),
		StringHeader(":content-type", "application/json"),
		StringHeader(":message-type", "event"),
	}, payload)
	return out
}

// AppendException appends a modeled exception frame (:message-type exception).
func AppendException(dst []byte, exceptionType string, payload []byte) []byte {
	out, _ := AppendMessage(dst, []Header{
		StringHeader(":message-type", "exception"),
		StringHeader(":exception-type", exceptionType),
		StringHeader(":content-type", "application/json"),
	}, payload)
	return out
}
