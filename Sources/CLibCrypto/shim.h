#ifndef SAMBENCH_CLIBCRYPTO_SHIM_H
#define SAMBENCH_CLIBCRYPTO_SHIM_H
// SHA-256 and MD5 from the system's libcrypto (OpenSSL's EVP digest interface), for dataset
// identities, run keys and download checks: the digests only, nothing of TLS.
#include <openssl/evp.h>
#endif
