// libpcap (Debian: libpcap-dev), for carillon-tap.
#include <pcap/pcap.h>
