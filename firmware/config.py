"""Strap defaults: one place for rates, pins, limits, buffer sizes, BLE identity, watchdogs.

Compile-time values. Some can be overridden per strap by /settings.json (see settings.py:
only the keys listed there, each validated; safety limits can only be tightened). Pins are
for the Seeed Studio XIAO ESP32-S3 and mirror hardware/pinout.csv (a test checks both).
Nothing here touches hardware.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


FIRMWARE_VERSION = "0.1.5"  # 0.1.1: no breath event before the first sample; 0.1.2: backfill outruns the ring;
# 0.1.3: IDENTIFY answers with its pattern's length; 0.1.4: no allocation per notification, a failed start-up
# restarts, a DRV2605L whose wake-up write failed is woken again; 0.1.5: BACKFILL re-sends the events confirmed in
# its range, the battery is not read during a haptic pattern
BOARD = "xiao-esp32s3"
CPU_FREQ_HZ = const(80_000_000)  # lowest clock the BLE controller runs at; halves idle current

# ---- sampling ----
SAMPLE_RATE_HZ = const(25)
SAMPLE_RATES_HZ = (25, 50)  # the detector has coefficients for exactly these

# ---- buffers (core/ringbuf.py) ----
RING_SECONDS = const(300)  # >= 5 min kept for backfill after a disconnect
SAMPLE_RING_LEN = const(15000)  # RING_SECONDS at 50 Hz (30 KB): a 50 Hz boot; rings.py sizes by the boot rate
EVENT_RING_LEN = const(512)  # 5 min of peaks + troughs up to 51 breaths/min: 10 KB
EVENT_FIELDS = const(5)  # detector.EVENT_FIELDS

# ---- pins: Seeed XIAO ESP32-S3 (hardware/pinout.csv) ----
# ADC1 only: ADC2 is shared with the radio. Strapping pins (0, 3, 45, 46) avoided.
PIN_SENSOR_ADC = const(1)  # D0 / A0, ADC1_CH0: stretch-cord divider midpoint
PIN_SENSOR_POWER = const(2)  # D1: feeds the divider only while sampling (saves ~0.5 mA); -1: none
PIN_MOTOR_PWM = const(4)  # D3: gate of the motor's low-side N-MOSFET (100 k pull-down)
PIN_I2C_SDA = const(5)  # D4: LPS22 / DRV2605L alternatives
PIN_I2C_SCL = const(6)  # D5
PIN_BATTERY_ADC = const(8)  # D9 / A9, ADC1_CH7: VBAT through a 1:2 divider
PIN_LED = const(21)  # on-board user LED, active low (board reference: the firmware does not drive it)
# The on-board BOOT button (GPIO0 on the XIAO ESP32-S3; GPIO9 on a C3), active low. Not a PIN_ entry: a
# strapping pin on the module, wired by the board, not in hardware/pinout.csv.
BOOT_BUTTON_GPIO = const(0)
BOOT_BUTTON_WINDOW_MS = const(1500)  # wired mode: BOOT pressed within this time after start-up keeps the REPL

# ---- sensor ----
SENSORS = ("stretch", "lps22")
SENSOR_DEFAULT = "stretch"
ADC_ATTEN_11DB = const(3)  # machine.ADC.ATTN_11DB: ~150..2450 mV usable
SENSOR_SETTLE_US = const(100)  # 5 RC of the divider (~2 k) and its 10 nF filter cap
I2C_ID = const(0)
I2C_FREQ_HZ = const(400_000)
LPS22_ADDR = const(0x5D)  # Adafruit LPS22 breakout default (SA0 high); 0x5C with SA0 low
LPS22_GAIN_SHIFT = const(0)  # u16 counts = 32768 + (p - baseline) >> shift; 1 count = 1/4096 hPa
LPS22_BASELINE_SHIFT = const(11)  # baseline EMA over 2**11 samples at 25 Hz (82 s; 2**12 at 50 Hz)

# ---- haptics (core/haptics.py ABS_* are the ceilings these must not exceed) ----
HAPTICS = ("erm_pwm", "drv2605")
HAPTIC_DEFAULT = "erm_pwm"
MOTOR_PWM_FREQ_HZ = const(20_000)  # above hearing: no motor whine
HAPTIC_MAX_ON_MS = const(1000)
HAPTIC_MIN_ON_MS = const(20)
HAPTIC_MIN_OFF_MS = const(50)
HAPTIC_MAX_OFF_MS = const(15000)
HAPTIC_MAX_PULSES = const(10)
HAPTIC_MAX_INTENSITY_PCT = const(80)
HAPTIC_DUTY_WINDOW_MS = const(10_000)
HAPTIC_DUTY_MAX_PCT = const(30)
HAPTIC_TICK_MS = const(20)  # control-loop period while a pattern runs
HAPTIC_STALL_MS = const(100)  # no tick for this long: motor off (core + hardware timer)
HAPTIC_HOST_SILENT_MS = const(5000)  # nothing from the host for this long: pattern aborted
HAPTIC_TIMER_ID = const(1)  # machine.Timer used as the motor's off-timer
HAPTIC_OFF_RETRY_MS = const(20)  # an 'off' the driver did not take (I2C error) is retried after this (backing off)
DRV2605_ADDR = const(0x5A)
DRV2605_RATED_MV = const(3000)  # ERM rated voltage: sets the DRV2605L's overdrive clamp

# ---- watchdog ----
WDT_TIMEOUT_MS = const(5000)  # longer than the slowest blocking call (flash write, BLE init)
# A start-up that fails (the radio does not come up, no heap for the rings) restarts the strap after this pause: a
# glitch passes with a reset, and a fault that repeats leaves mpremote's Ctrl-C a window to reach the REPL.
BOOT_RETRY_MS = const(3000)

# ---- BLE ----
BLE_NAME_PREFIX = "breathsync"
BLE_NAME_MAX_LEN = const(26)  # in the scan response (29 bytes of name max); fits "breathsync-therapist-ffff"
ROLES = ("client", "therapist", "unassigned")  # "unassigned": SET_ROLE 0, persisted like the others
ROLE_DEFAULT = "client"  # not "unassigned": hosts find straps by role ("auto"), a new strap is a client
BLE_ADV_INTERVAL_MS = const(250)
BLE_MTU_PREFERRED = const(247)

# ---- battery ----
BATTERY_DIVIDER_NUM = const(2)  # VBAT = pin voltage * NUM / DEN (two 220 k resistors)
BATTERY_DIVIDER_DEN = const(1)
BATTERY_CAPACITY_MAH = const(1200)

# ---- settings ----
SETTINGS_PATH = "/settings.json"
SETTINGS_MAX_BYTES = const(1024)
