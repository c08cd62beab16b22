// Force-included first into every translation unit of a ThreadSanitizer
// build (meson.build adds `-include` when b_sanitize=thread).
//
// protobuf 3.21's map_field.h gives MapFieldBase two extra members (seq1_,
// seq2_, placed before arena_) when __SANITIZE_THREAD__ is defined. Debian's
// libprotobuf.so is built without it, so an instrumented translation unit and
// the library disagree on the layout of every map field: inline accessors in
// our code read google.protobuf.Struct's `fields` (constructed inside the
// library) 8 bytes off and crash (SIGSEGV in Map::InnerMap::iterator_base),
// and the library's reflection reads our messages' map fields off by the same
// amount. Parsing map_field.h once with the macro hidden gives it the
// library's layout; its include guard keeps it that way for the rest of the
// translation unit. Nothing else in protobuf's headers looks at the macro.
#pragma once

// libstdc++'s configuration must still see ThreadSanitizer (_GLIBCXX_TSAN
// keeps shared_ptr's release path analysable), so it is read first.
#include <cstddef>

#pragma push_macro("__SANITIZE_THREAD__")
#undef __SANITIZE_THREAD__
#include <google/protobuf/map_field.h>
#pragma pop_macro("__SANITIZE_THREAD__")
