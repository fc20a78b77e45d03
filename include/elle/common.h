/*
 * libelle — common definitions shared by every public header.
 *
 * ELLE_API marks exported symbols. The library is built with hidden
 * visibility and a version script (libelle.map); only functions declared with
 * ELLE_API in the public headers are part of the ABI.
 */
#ifndef ELLE_COMMON_H
#define ELLE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(ELLE_BUILD)
#define ELLE_API __declspec(dllexport)
#elif defined(_WIN32) && defined(ELLE_SHARED)
#define ELLE_API __declspec(dllimport)
#elif defined(__GNUC__)
#define ELLE_API __attribute__((visibility("default")))
#else
#define ELLE_API
#endif

#if defined(__GNUC__)
#define ELLE_DEPRECATED(msg) __attribute__((deprecated(msg)))
#else
#define ELLE_DEPRECATED(msg)
#endif

#ifdef __cplusplus
#define ELLE_BEGIN_DECL extern "C" {
#define ELLE_END_DECL }
#else
#define ELLE_BEGIN_DECL
#define ELLE_END_DECL
#endif

#endif /* ELLE_COMMON_H */
