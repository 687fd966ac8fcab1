/* libnacvae.so is the static library's objects linked whole (CMakeLists.txt); a shared
 * library target needs a source of its own, and this is it. */
#include "lib/nacvae.h"

const char *nacvae_version(void);
const char *nacvae_version(void) { return NAC_VERSION; }
