package topology

import (
	"encoding/binary"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// The envelope decoders read a record value with scanner, a small JSON
// reader specialised for one job: walk the members of the top-level object,
// hand out each member value as a slice of the input, and validate whatever
// it skips, nested payloads included, without allocating. It accepts exactly
// what encoding/json.Valid accepts, nesting limit included; like it, it does
// not check that strings are valid UTF-8.

// maxDepth is the deepest nesting accepted, encoding/json's limit.
const maxDepth = 10000

// kind is the type of a JSON value.
type kind uint8

const (
	kindNone   kind = iota // absent
	kindString             // "..."
	kindNumber             // -1.5e3
	kindObject             // {...}
	kindArray              // [...]
	kindBool               // true, false
	kindNull               // null
)

// value is a JSON value: raw is its text, a slice of the input. A string's
// raw text includes its quotes; escaped says whether it holds escapes.
type value struct {
	raw     []byte
	kind    kind
	escaped bool
}

// syntaxError is invalid JSON at byte off of the input.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.off, e.msg)
}

type scanner struct {
	b     []byte
	i     int
	first bool   // no member of the top-level object read yet
	stack []byte // the open containers of skipValue, '{' or '['; reused
}

func (s *scanner) reset(b []byte) {
	s.b, s.i, s.first = b, 0, true
}

func (s *scanner) errorf(format string, args ...any) error {
	return &syntaxError{off: s.i, msg: fmt.Sprintf(format, args...)}
}

// got describes the byte at the current position for an error message.
func (s *scanner) got() string {
	if s.i >= len(s.b) {
		return "the end of the input"
	}
	return fmt.Sprintf("%q", s.b[s.i:s.i+1])
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// beginObject reads the opening brace of the top-level object.
func (s *scanner) beginObject() error {
	s.ws()
	if s.i >= len(s.b) {
		return s.errorf("want a JSON object, got an empty value")
	}
	if s.b[s.i] != '{' {
		return s.errorf("want a JSON object, got %s", s.got())
	}
	s.i++
	s.first = true
	return nil
}

// member reads the next member of the top-level object into key and val. It
// returns false after the closing brace.
func (s *scanner) member(key, val *value) (bool, error) {
	s.ws()
	if s.i >= len(s.b) {
		return false, s.errorf("unterminated object: want '}'")
	}
	switch c := s.b[s.i]; {
	case c == '}':
		s.i++
		return false, nil
	case s.first:
		s.first = false
	case c == ',':
		s.i++
		s.ws()
	default:
		return false, s.errorf("want ',' or '}' after an object member, got %s", s.got())
	}
	if err := s.key(key); err != nil {
		return false, err
	}
	return true, s.value(val, 1)
}

// key reads an object key and the colon after it.
func (s *scanner) key(key *value) error {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return s.errorf("want a string as the object key, got %s", s.got())
	}
	if err := s.str(key); err != nil {
		return err
	}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return s.errorf("want ':' after the object key, got %s", s.got())
	}
	s.i++
	s.ws()
	return nil
}

// end checks that only white space follows the top-level value.
func (s *scanner) end() error {
	s.ws()
	if s.i < len(s.b) {
		return s.errorf("unexpected %s after the JSON value", s.got())
	}
	return nil
}

// value reads the value at the current position, at nesting depth depth.
func (s *scanner) value(v *value, depth int) error {
	start := s.i
	if s.i >= len(s.b) {
		return s.errorf("want a value, got the end of the input")
	}
	switch c := s.b[s.i]; c {
	case '"':
		return s.str(v)
	case '{', '[':
		if err := s.container(depth); err != nil {
			return err
		}
		v.kind = kindObject
		if c == '[' {
			v.kind = kindArray
		}
	case 't':
		if err := s.literal("true"); err != nil {
			return err
		}
		v.kind = kindBool
	case 'f':
		if err := s.literal("false"); err != nil {
			return err
		}
		v.kind = kindBool
	case 'n':
		if err := s.literal("null"); err != nil {
			return err
		}
		v.kind = kindNull
	default:
		if err := s.number(); err != nil {
			return err
		}
		v.kind = kindNumber
	}
	v.raw, v.escaped = s.b[start:s.i], false
	return nil
}

func (s *scanner) literal(lit string) error {
	if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return nil
	}
	return s.errorf("want a value, got %s", s.got())
}

// strSafe are the bytes a string holds as they are: not a quote, a
// backslash or a control character.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Bit tricks on eight bytes at once (Hacker's Delight, 6-1; Anderson's bit
// twiddling hacks): hasZero is non-zero when a byte of x is zero, hasLess
// when a byte of x is below n (n <= 128). Neither misses a byte.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

func hasZero(x uint64) uint64           { return (x - lsb) &^ x & msb }
func hasLess(x uint64, n uint64) uint64 { return (x - lsb*n) &^ x & msb }

// str reads a string into v.
func (s *scanner) str(v *value) error {
	b := s.b
	start := s.i
	i := start + 1
	escaped := false
	for {
		// Eight bytes at a time while none of them ends the run of plain
		// bytes, then one at a time.
		for i+8 <= len(b) {
			x := binary.LittleEndian.Uint64(b[i:])
			if hasLess(x, 0x20)|hasZero(x^(lsb*'"'))|hasZero(x^(lsb*'\\')) != 0 {
				break
			}
			i += 8
		}
		for i < len(b) && strSafe[b[i]] {
			i++
		}
		if i >= len(b) {
			s.i = start
			return s.errorf("unterminated string")
		}
		switch b[i] {
		case '"':
			i++
			v.raw, v.kind, v.escaped = b[start:i], kindString, escaped
			s.i = i
			return nil
		case '\\':
			escaped = true
			if i+1 >= len(b) {
				s.i = i
				return s.errorf("unterminated string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || hex4(b[i+2:i+6]) < 0 {
					s.i = i
					return s.errorf(`invalid \u escape in string: want four hex digits`)
				}
				i += 6
			default:
				s.i = i
				return s.errorf("invalid escape %q in string", b[i:i+2])
			}
		default:
			s.i = i
			return s.errorf("control character %q in string; escape it", b[i:i+1])
		}
	}
}

// number reads a number.
func (s *scanner) number() error {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	default:
		s.i = i
		return s.errorf("want a value, got %s", s.got())
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			s.i = i
			return s.errorf("want a digit after the decimal point, got %s", s.got())
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			s.i = i
			return s.errorf("want a digit in the exponent, got %s", s.got())
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	s.i = i
	return nil
}

// container skips the object or array at the current position, which is at
// nesting depth depth, validating it, without recursion.
func (s *scanner) container(depth int) error {
	stack := s.stack[:0]
	defer func() { s.stack = stack[:0] }()
	var v value
	for {
		// At the start of a value.
		if s.i >= len(s.b) {
			return s.errorf("want a value, got the end of the input")
		}
		closed := false
		switch c := s.b[s.i]; c {
		case '{', '[':
			if depth+len(stack) >= maxDepth {
				return s.errorf("nesting deeper than %d levels", maxDepth)
			}
			stack = append(stack, c)
			s.i++
			s.ws()
			switch {
			case s.i >= len(s.b):
				return s.errorf("unterminated %s", containerName(c))
			case c == '{' && s.b[s.i] == '}', c == '[' && s.b[s.i] == ']':
				s.i++
				stack = stack[:len(stack)-1]
				closed = true
			case c == '{':
				if err := s.key(&v); err != nil {
					return err
				}
			}
		default:
			if err := s.value(&v, depth+len(stack)); err != nil {
				return err
			}
			closed = true
		}
		if !closed {
			continue
		}
		// After a value: a separator, or the ends of containers.
		for {
			if len(stack) == 0 {
				return nil
			}
			s.ws()
			if s.i >= len(s.b) {
				return s.errorf("unterminated %s", containerName(stack[len(stack)-1]))
			}
			c, open := s.b[s.i], stack[len(stack)-1]
			if c == ',' {
				s.i++
				s.ws()
				if open == '{' {
					if err := s.key(&v); err != nil {
						return err
					}
				}
				break
			}
			if open == '{' && c == '}' || open == '[' && c == ']' {
				s.i++
				stack = stack[:len(stack)-1]
				continue
			}
			if open == '{' {
				return s.errorf("want ',' or '}' after an object member, got %s", s.got())
			}
			return s.errorf("want ',' or ']' after an array element, got %s", s.got())
		}
	}
}

func containerName(c byte) string {
	if c == '{' {
		return "object"
	}
	return "array"
}

// validJSON reports whether b is one JSON value, surrounded by white space
// at most.
func (s *scanner) validJSON(b []byte) error {
	s.reset(b)
	s.ws()
	var v value
	if err := s.value(&v, 0); err != nil {
		return err
	}
	return s.end()
}

// hex4 decodes four hex digits, or returns -1.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// unescape appends the contents of the valid JSON string raw (quotes
// included) to dst, resolving escapes the way encoding/json does: a lone
// surrogate becomes U+FFFD.
func unescape(dst, raw []byte) []byte {
	b := raw[1 : len(raw)-1]
	for i := 0; i < len(b); {
		c := b[i]
		if c != '\\' {
			j := i + 1
			for j < len(b) && b[j] != '\\' {
				j++
			}
			dst = append(dst, b[i:j]...)
			i = j
			continue
		}
		switch b[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(b[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(b) && b[i] == '\\' && b[i+1] == 'u' {
					if r2 := utf16.DecodeRune(r, hex4(b[i+2:])); r2 != utf8.RuneError {
						r = r2
						i += 6
						dst = utf8.AppendRune(dst, r)
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, b[i+1])
		}
		i += 2
	}
	return dst
}

// appendJSONString appends s to dst as a JSON string, escaping what JSON
// requires and replacing invalid UTF-8 with U+FFFD, like encoding/json.
func appendJSONString(dst, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
