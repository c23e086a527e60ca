/* wake_rtt.c: what one wake-up across vCPUs costs on this VM (docs/performance.md, session 6).
 * A 1-byte TCP ping-pong on 127.0.0.1 (TCP_NODELAY), 5000 round trips after 500 warm-up ones;
 * the echoing child waits by
 *   mode 0  blocking read(2)
 *   mode 1  epoll_wait(2), then non-blocking reads (how tokio waits)
 *   mode 2  poll(2), then non-blocking reads
 * and the parent sleeps GAP microseconds between round trips (default 0).
 * Build and run: gcc -O2 -o /tmp/wake_rtt docs/bench/wake_rtt.c &&
 *   for m in 0 1 2; do /tmp/wake_rtt $m; taskset -c 0 /tmp/wake_rtt $m; done
 * Both processes on one vCPU (taskset) round-trip in ~5 us; on two, ~70-80 us: each wake-up
 * of a halted vCPU is a trip through the host (guest halt-polling is off on this kernel).
 * Where the scheduler puts them varies from run to run, so unpinned runs are bimodal.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <poll.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); int gap=argc>2?atoi(argv[2]):0;
  int ls=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_addr.s_addr=htonl(0x7f000001);
  bind(ls,(void*)&a,sizeof a); listen(ls,1); socklen_t l=sizeof a; getsockname(ls,(void*)&a,&l);
  if(fork()==0){int c=socket(AF_INET,SOCK_STREAM,0);connect(c,(void*)&a,sizeof a);int one=1;setsockopt(c,IPPROTO_TCP,TCP_NODELAY,&one,4);char b[64];
    if(mode==0){while(read(c,b,1)==1)write(c,b,1);_exit(0);}
    if(mode==2){fcntl(c,F_SETFL,O_NONBLOCK); for(;;){struct pollfd pf={c,POLLIN,0}; poll(&pf,1,-1); for(;;){ssize_t r=read(c,b,64); if(r==0)_exit(0); if(r<0)break; write(c,b,r);}}}
    fcntl(c,F_SETFL,O_NONBLOCK); int ep=epoll_create1(0); struct epoll_event ev={EPOLLIN|EPOLLET,{0}}; epoll_ctl(ep,EPOLL_CTL_ADD,c,&ev);
    for(;;){struct epoll_event e; epoll_wait(ep,&e,1,-1); for(;;){ssize_t r=read(c,b,64); if(r==0)_exit(0); if(r<0)break; write(c,b,r);} }
  }
  int s=accept(ls,0,0); int one=1; setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,4);
  int n=5000; double *v=malloc(n*sizeof(double)); char b='x';
  for(int i=0;i<n+500;i++){double t=now(); write(s,&b,1); read(s,&b,1); if(i>=500) v[i-500]=now()-t; if(gap)usleep(gap);}
  qsort(v,n,sizeof(double),cmp); printf("mode %d gap %d: p50 %.0f us p99 %.0f us\n",mode,gap,v[n/2],v[n*99/100]);
  close(s); wait(0);
}
