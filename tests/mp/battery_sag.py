# ruff: noqa: UP031  (runs under MicroPython)
# A cell whose voltage steps over time and sags while the motor pin is driven (the motor's current through the cell's
# resistance), for tests/mp/app_faults.py's "sagging_battery_mv" plan.
import config
import machine


def install(steps, sag_mv):
    """``steps``: [[t_ms, mV], ...] in time order; ``sag_mv``: how much lower the cell reads while the motor runs."""

    def pin_u16(mv):  # VBAT through the divider; the ADC double maps u16 linearly onto 150..2450 mV
        return (mv * config.BATTERY_DIVIDER_DEN // config.BATTERY_DIVIDER_NUM - 150) * 65535 // 2300

    def read():
        cell_mv = 0
        for t_ms, mv in steps:
            if machine.sim.now_ms() >= t_ms:
                cell_mv = mv
        timeline = machine.sim._pwm.get(config.PIN_MOTOR_PWM)
        return pin_u16(cell_mv - sag_mv if timeline and timeline[-1][1] > 0 else cell_mv)

    machine.sim.set_adc_source(config.PIN_BATTERY_ADC, read)
