// libsodium (Debian: libsodium-dev), used for frame authentication tags.
#include <sodium.h>
