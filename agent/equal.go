package agent

import "reflect"

// equal compares configuration sections, which hold slices.
func equal(a, b any) bool { return reflect.DeepEqual(a, b) }
