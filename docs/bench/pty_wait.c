/* pty_wait.c: how the way a reader waits on a PTY master sets its read rate (docs/performance.md,
 * session 5). A child writes N MB of zeros into a raw PTY; the parent reads it in 64 KiB reads:
 *   mode 0  blocking read(2)
 *   mode 1  non-blocking read; on EAGAIN poll(2) with a 2 ms timeout (the old bulk pump)
 *   mode 3  poll(2) without a timeout before every blocking read
 *   mode 4  non-blocking read; on EAGAIN one blocking read (O_NONBLOCK toggled)
 *   mode 5  blocking read with VMIN=0 VTIME=1 on the master
 *   mode 6  non-blocking read; on EAGAIN poll(2) without a timeout
 *   mode 7  non-blocking read; on EAGAIN poll(2) of the PTY and a 2 ms periodic timerfd (the
 *           bulk pump now)
 * Build and run: gcc -O2 -o /tmp/pty_wait docs/bench/pty_wait.c -lutil &&
 *   for m in 0 1 6 7; do /tmp/pty_wait $m 256; done
 */
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <time.h>
#include <termios.h>
#include <sys/wait.h>
#include <errno.h>
#include <sys/timerfd.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); long mb=atol(argv[2]);
  int m; pid_t p=forkpty(&m,NULL,NULL,NULL);
  if(p==0){char cmd[256];snprintf(cmd,256,"stty raw -echo; head -c1 >/dev/null; head -c %ld000000 /dev/zero",mb);execl("/bin/sh","sh","-c",cmd,NULL);_exit(1);}
  usleep(300000);
  int fl=fcntl(m,F_GETFL);
  if(mode==1||mode==4||mode==6||mode==7) fcntl(m,F_SETFL,fl|O_NONBLOCK);
  if(mode==5){struct termios t; tcgetattr(m,&t); t.c_cc[VMIN]=0; t.c_cc[VTIME]=1; tcsetattr(m,TCSANOW,&t);}
  int tf=timerfd_create(CLOCK_MONOTONIC,TFD_NONBLOCK); struct itimerspec its={{0,2000000},{0,2000000}}; timerfd_settime(tf,0,&its,NULL); long ticks=0;
  static char buf[65536]; long tot=0,reads=0,waits=0; double t=now();
  write(m,"g",1);
  for(;;){
    if(mode==3){struct pollfd pf={m,POLLIN,0}; poll(&pf,1,-1);}
    ssize_t n=read(m,buf,sizeof buf);
    if(n>0){tot+=n;reads++;continue;}
    if(n==0){ if(mode==5){waits++; continue;} break;}
    if(errno==EAGAIN){ waits++;
      if(mode==4){fcntl(m,F_SETFL,fl); n=read(m,buf,sizeof buf); fcntl(m,F_SETFL,fl|O_NONBLOCK); if(n>0){tot+=n;reads++;continue;} if(n==0)break; if(errno==EIO)break; continue;}
      if(mode==7){struct pollfd pf[2]={{m,POLLIN,0},{tf,POLLIN,0}}; poll(pf,2,-1); if(pf[1].revents){unsigned long long x; read(tf,&x,8); ticks++;} continue;}
      struct pollfd pf={m,POLLIN,0}; poll(&pf,1,mode==6?-1:2); continue;}
    if(errno==EINTR) continue;
    break;
  }
  double d=now()-t; waitpid(p,NULL,0);
  printf("mode %d: %.0f MB/s, %ld B/read, waits %ld ticks %ld\n",mode,tot/d/1e6,tot/(reads?reads:1),waits,ticks);
}
