package campaign

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// jsonKind is the JSON type of a value as the strict walk sees it.
type jsonKind string

const (
	kindObject jsonKind = "an object"
	kindArray  jsonKind = "an array"
	kindString jsonKind = "a string"
	kindNumber jsonKind = "a number"
	kindBool   jsonKind = "a boolean"
	kindNull   jsonKind = "null"
)

// signatureShape is the type of every field of signature version 1, by path.
// Fields not listed here are unknown.
var signatureShape = map[string]jsonKind{
	"version":        kindNumber,
	"id":             kindString,
	"campaign":       kindString,
	"signer":         kindObject,
	"signer.name":    kindString,
	"signer.email":   kindString,
	"signer.country": kindString,
	"signer.locale":  kindString,
	"comment":        kindString,
	"signed_at":      kindString,
}

// visitFunc sees every value of a JSON document with its dotted path and the
// input offset just past its first token.
type visitFunc func(path string, kind jsonKind, end int64) error

// walkJSON walks one JSON value, calling visit for every value (objects and
// arrays before their members). It rejects duplicate keys, which
// encoding/json would silently resolve to the last one, letting a JSON
// Schema validator and petitiond disagree about what was submitted.
func walkJSON(dec *json.Decoder, path string, visit visitFunc) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	end := dec.InputOffset()
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			if err := visit(path, kindObject, end); err != nil {
				return err
			}
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				key, _ := kt.(string)
				child := key
				if path != "" {
					child = path + "." + key
				}
				if seen[key] {
					return fieldErr(child, "duplicate field")
				}
				seen[key] = true
				if err := walkJSON(dec, child, visit); err != nil {
					return err
				}
			}
		case '[':
			if err := visit(path, kindArray, end); err != nil {
				return err
			}
			for i := 0; dec.More(); i++ {
				if err := walkJSON(dec, path+"["+strconv.Itoa(i)+"]", visit); err != nil {
					return err
				}
			}
		}
		_, err := dec.Token() // the closing delimiter
		return err
	case string:
		return visit(path, kindString, end)
	case json.Number, float64:
		return visit(path, kindNumber, end)
	case bool:
		return visit(path, kindBool, end)
	case nil:
		return visit(path, kindNull, end)
	}
	return fmt.Errorf("unexpected JSON token %v", tok)
}

// walkStrict checks names and types of every field of a signature.
func walkStrict(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	err := walkJSON(dec, "", func(path string, kind jsonKind, _ int64) error {
		if path == "" {
			return nil
		}
		want, ok := signatureShape[path]
		switch {
		case !ok:
			return fieldErr(path, "unknown field")
		case kind == kindNull:
			return fieldErr(path, "must be %s, not null (leave the field out instead)", want)
		case kind != want:
			return fieldErr(path, "must be %s, got %s", want, kind)
		}
		return nil
	})
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return fe
		}
		return fieldErr("input", "is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fieldErr("input", "has more than one JSON value")
	}
	return nil
}

// locateInvalidUTF8 names the field whose string holds the first invalid
// UTF-8 byte, or "input" when it is outside any field (or the JSON is too
// broken to tell).
func locateInvalidUTF8(data []byte) string {
	bad := int64(-1)
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 {
			bad = int64(i)
			break
		}
		i += size
	}
	if bad < 0 {
		return "input"
	}
	found := "input"
	dec := json.NewDecoder(bytes.NewReader(data))
	errFound := errors.New("found")
	_ = walkJSON(dec, "", func(path string, kind jsonKind, end int64) error {
		if end > bad {
			if kind == kindString && path != "" {
				found = path
			}
			return errFound
		}
		return nil
	})
	return found
}
